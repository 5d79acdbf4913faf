"""The training loop every stage shares: config, distributed, model, data, engine, loop, export."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from training.config import TrainConfig
from training.engine import MetricsLog, build_engine, finish, finite, init_distributed, resume, to_device
from training.models import load_model_and_processor


def run(cfg: TrainConfig, make_stream) -> int:
    """Train cfg.max_steps steps on make_stream(processor, rank, world, skip); resume from a checkpoint."""
    rank, world = init_distributed()
    torch.manual_seed(cfg.seed)

    model, processor = load_model_and_processor(cfg.model)
    engine = build_engine(model, cfg)
    local, checkpoints, position = resume(engine, cfg, rank)

    batches = iter(make_stream(processor, rank, world, position["samples"]))
    metrics = MetricsLog(local, rank, sum(p.numel() for p in model.parameters()))
    step, samples = position["step"], position["samples"]
    bar = tqdm(total=cfg.max_steps, initial=step, disable=rank != 0 or None, file=sys.stderr, unit="step")
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
    finish(engine, processor, cfg, local, rank)
    return 0
