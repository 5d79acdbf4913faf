"""Supervised fine-tuning on chat JSONL whose long contexts are rendered pages, with auxiliary OCR.

    python -m training.sft --config configs/train/sft.yaml [--model PATH --data FILE.jsonl
        --output-dir DIR --max-steps N]
    deepspeed --num_gpus 8 -m training.sft --config ...      (or torchrun, or --hostfile)
"""

from __future__ import annotations

import sys

from training import loop
from training.config import parse_config
from training.data.sft import SftStream


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    from pipeline.render.styles import resolve_config

    render_config = resolve_config(cfg.render_style, cfg.render_config)

    def make_stream(processor, rank, world, skip):
        return SftStream(cfg.data, processor, render_config, cfg.max_length, cfg.ocr_ratio, cfg.seed,
                         rank=rank, world_size=world, skip=skip)

    return loop.run(cfg, make_stream)


if __name__ == "__main__":
    sys.exit(main())
