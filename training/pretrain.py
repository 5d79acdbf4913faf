"""Continual pre-training on rendered pages (OCR, interleaved LM, generation), as a DeepSpeed job.

    python -m training.pretrain --config configs/train/pretrain.yaml [--model PATH --data URI
        --output-dir DIR --max-steps N]
    deepspeed --num_gpus 8 -m training.pretrain --config ...      (or torchrun, or --hostfile)
"""

from __future__ import annotations

import sys

from training import loop
from training.config import parse_config
from training.data.stream import TaskStream
from training.data.tasks import TaskBuilder


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    tasks = TaskBuilder(cfg.tasks, cfg.max_pages, cfg.seed)

    def make_stream(processor, rank, world, skip):
        return TaskStream(cfg.data, processor, tasks, cfg.max_length, rank=rank, world_size=world, skip=skip,
                          shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)

    return loop.run(cfg, make_stream)


if __name__ == "__main__":
    sys.exit(main())
