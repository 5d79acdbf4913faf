"""What every stage shares: distributed set-up, the DeepSpeed engine, checkpoints, metrics, export.

Runs the same under `python -m training.X` (one process), `deepspeed` and
`torchrun`: rank and world size come from the environment the launcher sets.
On a machine without CUDA, DeepSpeed's CPU accelerator and gloo are used.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import torch

from training.config import TrainConfig


def init_distributed() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed through DeepSpeed."""
    import deepspeed

    if "RANK" not in os.environ:  # a plain single-process run
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend)
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def deepspeed_config(cfg: TrainConfig) -> dict:
    """The stage's DeepSpeed JSON with its "auto" values filled in (the Trainer fills them for the other stages)."""
    config = json.loads(cfg.deepspeed_path.read_text())
    filled = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "gradient_clipping": cfg.max_grad_norm}
    config.update({k: v for k, v in filled.items() if config.get(k) == "auto"})
    if config.get("bf16", {}).get("enabled") == "auto":
        config["bf16"]["enabled"] = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return config


def build_engine(model, cfg: TrainConfig):
    """DeepSpeed engine around the model with a torch AdamW (no op compilation) and linear warm-up."""
    import deepspeed

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)

    def warmup(step: int) -> float:
        return min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                           lr_scheduler=scheduler, config=deepspeed_config(cfg))
    return engine


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def local_output(output_dir: str) -> str:
    """Where a stage writes: output_dir itself, or for s3:// a local staging folder synced to it."""
    from pipeline import storage

    if not storage.is_s3(output_dir):
        return output_dir
    import hashlib
    import tempfile

    return str(Path(tempfile.gettempdir()) / "glyph-train" / hashlib.sha1(output_dir.encode()).hexdigest()[:12])


def sync_up(local: str, output_dir: str, rank: int, only: str = "") -> None:
    """Copy the staging folder (or its part `only`) to an s3:// output; local outputs need nothing.

    `rank` here is the uploader's role: pass the local rank so each node uploads what its ranks wrote.
    """
    from pipeline import storage

    if not storage.is_s3(output_dir) or rank != 0:
        return
    store = storage.get_storage(output_dir)
    root = Path(local)
    start = root / only if only else root
    paths = [start] if start.is_file() else sorted(start.rglob("*"))
    for path in paths:
        if path.is_file():
            store.upload(path, storage.join(output_dir, str(path.relative_to(root))))


def sync_down(output_dir: str, local: str) -> None:
    """Mirror an s3:// output's checkpoints and metrics into a fresh staging folder (to resume).

    S3 is the truth: whatever an earlier run left in the staging folder is dropped first.
    """
    import shutil

    from pipeline import storage

    if not storage.is_s3(output_dir):
        return
    shutil.rmtree(local, ignore_errors=True)
    store = storage.get_storage(output_dir)
    for obj in store.list(output_dir):
        relative = obj.uri[len(output_dir.rstrip("/")) + 1:]
        if relative.startswith(("checkpoints/", "metrics.jsonl")):
            target = Path(local) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                store.download(obj.uri, target)


class Checkpoints:
    """DeepSpeed checkpoints under OUTPUT/checkpoints (local, or staged and copied to S3);
    the client state carries the step and the data position."""

    def __init__(self, engine, output_dir: str, local: str | None = None, rank: int = 0):
        self.engine, self.output_dir, self.rank = engine, output_dir, rank
        self.local = local or output_dir
        self.folder = Path(self.local) / "checkpoints"

    def load(self) -> dict:
        if not (self.folder / "latest").exists():
            return {"step": 0, "samples": 0}
        _, state = self.engine.load_checkpoint(str(self.folder))
        return state or {"step": 0, "samples": 0}

    def save(self, step: int, samples: int) -> None:
        tag = f"step{step:08d}"
        self.engine.save_checkpoint(str(self.folder), tag=tag, client_state={"step": step, "samples": samples})
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        sync_up(self.local, self.output_dir, local_rank, only=f"checkpoints/{tag}")  # each node its ranks' files
        sync_up(self.local, self.output_dir, self.rank, only="metrics.jsonl")
        torch.distributed.barrier()
        sync_up(self.local, self.output_dir, self.rank, only="checkpoints/latest")  # the pointer goes last


class MetricsLog:
    """Loss, learning rate, samples/s, tokens/s and an MFU estimate as JSON lines (rank 0)."""

    def __init__(self, output_dir: str, rank: int, params: int, peak_flops: float | None = None):
        self.rank, self.params = rank, params
        self.peak = peak_flops or float(os.environ.get("GLYPH_PEAK_FLOPS", "0")) or None
        self.path = Path(output_dir) / "metrics.jsonl"
        self.started = self.last = time.perf_counter()
        if rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, loss: float, lr: float, samples: int, tokens: int, **extra) -> dict:
        now = time.perf_counter()
        seconds = max(now - self.last, 1e-9)
        self.last = now
        flops = 6 * self.params * tokens / seconds  # 6·N·T: forward and backward, attention excluded
        record = {"step": step, "loss": round(loss, 5), "lr": lr, "samples_per_s": round(samples / seconds, 3),
                  "tokens_per_s": round(tokens / seconds, 1), "mfu": round(flops / self.peak, 5) if self.peak else None,
                  "elapsed_s": round(now - self.started, 2), **extra}
        if self.rank == 0:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        return record


def export(engine, processor, output_dir: str, rank: int) -> Path:
    """The trained model in Hugging Face format, with its processor, for the next stage."""
    target = Path(output_dir) / "model"
    state = engine.module.state_dict() if engine.zero_optimization_stage() < 3 else \
        engine._zero3_consolidated_16bit_state_dict()
    if rank == 0:
        engine.module.save_pretrained(target, state_dict=state)
        processor.save_pretrained(target)
    return target


def write_parameter_digest(engine, output_dir: str, rank: int) -> None:
    """Each rank writes a hash of its parameters: data-parallel ranks must agree (a cheap sanity check)."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in sorted(engine.module.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    path = Path(output_dir) / f"params-rank{rank}.sha256"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest.hexdigest() + "\n")


def resume(engine, cfg: TrainConfig, rank: int):
    """(staging folder, Checkpoints, position) for a run: an s3:// output is mirrored down first."""
    local = local_output(cfg.output_dir)  # an s3:// output is staged here and copied up
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        sync_down(cfg.output_dir, local)
    torch.distributed.barrier()
    checkpoints = Checkpoints(engine, cfg.output_dir, local, rank)
    return local, checkpoints, checkpoints.load()  # position: {"step", "samples"} where a killed run stopped


def finish(engine, processor, cfg: TrainConfig, local: str, rank: int) -> None:
    """Parameter digest, Hugging Face export, and the copy up to an s3:// output."""
    write_parameter_digest(engine, local, rank)
    export(engine, processor, local, rank)
    sync_up(local, cfg.output_dir, rank, only="model")
    sync_up(local, cfg.output_dir, rank, only="metrics.jsonl")


def finite(loss: torch.Tensor) -> float:
    value = float(loss.detach().float().item())
    if not math.isfinite(value):
        print(f"non-finite loss {value}", file=sys.stderr)
    return value
