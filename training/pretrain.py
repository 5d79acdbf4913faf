"""Continual pre-training on rendered pages (OCR, interleaved LM, generation), as a DeepSpeed job.

    python -m training.pretrain --config configs/train/pretrain.yaml [--model PATH --data URI
        --output-dir DIR --max-steps N]
    deepspeed --num_gpus 8 -m training.pretrain --config ...      (or torchrun, or --hostfile)

Reads top to bottom: config, distributed, model, data, engine, loop, export.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from training.config import parse_config
from training.data.stream import TaskStream
from training.data.tasks import TaskBuilder
from training.engine import (Checkpoints, MetricsLog, build_engine, export, finite, init_distributed, to_device,
                             write_parameter_digest)
from training.models import load_model_and_processor


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    rank, world = init_distributed()
    torch.manual_seed(cfg.seed)

    model, processor = load_model_and_processor(cfg.model)
    engine = build_engine(model, cfg)
    checkpoints = Checkpoints(engine, cfg.output_dir)
    position = checkpoints.load()  # {"step", "samples"}: where a killed run stopped

    stream = TaskStream(cfg.data, processor, TaskBuilder(cfg.tasks, cfg.max_pages, cfg.seed), cfg.max_length,
                        rank=rank, world_size=world, skip=position["samples"])
    params = sum(p.numel() for p in model.parameters())
    metrics = MetricsLog(cfg.output_dir, rank, params)
    step, samples = position["step"], position["samples"]
    bar = tqdm(total=cfg.max_steps, initial=step, disable=rank != 0 or None, file=sys.stderr, unit="step")
    batches = iter(stream)
    while step < cfg.max_steps:
        batch = next(batches)
        task = batch.pop("task")
        tokens = int(batch["attention_mask"].sum())
        loss = engine(**to_device(batch, engine.device)).loss
        engine.backward(loss)
        engine.step()
        step, samples = step + 1, samples + 1
        if step % cfg.log_every == 0:
            record = metrics.log(step, finite(loss), engine.get_lr()[0], 1, tokens, task=task)
            bar.set_postfix(loss=record["loss"], refresh=False)
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            checkpoints.save(step, samples)
    bar.close()
    write_parameter_digest(engine, cfg.output_dir, rank)
    export(engine, processor, cfg.output_dir, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
