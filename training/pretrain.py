"""Continual pre-training on rendered pages (OCR, interleaved LM, generation), on transformers' Trainer.

    python -m training.pretrain --config configs/train/pretrain.yaml [--model PATH --data URI
        --output-dir DIR --max-steps N --deepspeed JSON]
    deepspeed --num_gpus 8 --module training.pretrain --config ...      (or torchrun -m, or --hostfile)
"""

from __future__ import annotations

import sys

from training.config import parse_config
from training.trainer import run_stage, train


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    from pipeline.corpus.reader import shard_uris
    from training.data.stream import DataError, PageTaskStream
    from training.data.tasks import TaskBuilder

    tasks = TaskBuilder(cfg.tasks, cfg.max_pages, cfg.seed)
    if not shard_uris(cfg.data):
        raise DataError(f"--data {cfg.data}: no rendered shards (.tar) there")

    def make_dataset(processor, rank, world, start):
        return PageTaskStream(cfg.data, processor, tasks, cfg.max_length, rank=rank, world_size=world, start=start,
                              shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed)

    return train(cfg, make_dataset)


if __name__ == "__main__":
    sys.exit(run_stage(main))
