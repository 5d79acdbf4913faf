"""Supervised fine-tuning on chat records (ms-swift, TRL or `context` rendered on the fly), auxiliary OCR.

    python -m training.sft --config configs/train/sft.yaml [--model PATH --data FILE|FOLDER
        --output-dir DIR --max-steps N --deepspeed JSON]
    deepspeed --num_gpus 8 --module training.sft --config ...      (or torchrun -m, or --hostfile)
"""

from __future__ import annotations

import sys

from training.config import parse_config
from training.trainer import run_stage, train


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    from pipeline.render.styles import resolve_config
    from training.data.sft import SftStream, data_files

    render_config = resolve_config(cfg.render_style, cfg.render_config)
    data_files(cfg.data)  # a missing --data is an error before any model is loaded

    def make_dataset(processor, rank, world, start):
        return SftStream(cfg.data, processor, render_config, cfg.max_length, cfg.ocr_ratio, cfg.seed, rank=rank,
                         world_size=world, start=start, last_turn_only=cfg.last_turn_only)

    return train(cfg, make_dataset)


if __name__ == "__main__":
    sys.exit(run_stage(main))
