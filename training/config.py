"""TrainConfig: one YAML file per stage in configs/train/, command-line flags override it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline import REPO_ROOT
from training.errors import UsageError


@dataclass
class TrainConfig:
    model: str = "out/tiny-model"
    data: str = "out/demo/rendered"
    output_dir: str = "out/pretrain"
    max_steps: int = 20
    learning_rate: float = 1e-3
    min_learning_rate: float = 0.0  # where the decay ends (cosine); 0: to zero
    lr_scheduler: str = "cosine"  # constant, linear or cosine, after warmup_steps of linear warm-up
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    per_device_batch_size: int = 1  # samples per micro-batch, padded to the longest
    gradient_accumulation_steps: int = 1  # global batch = per_device_batch_size * accumulation * ranks
    max_length: int = 2048
    tasks: dict = field(default_factory=lambda: {"ocr": 1.0})
    max_pages: int = 0  # pages per pre-training sample at most (0: as many as fit in max_length)
    shuffle_buffer: int = 0  # samples held for shuffling (0: stream order)
    gradient_checkpointing: bool = True  # decoder layers and vision blocks recomputed in the backward pass
    attn_implementation: str = "auto"  # auto: flash_attention_2 when installed on a GPU, else sdpa
    loss_chunk_tokens: int = 2048  # the loss projects this many positions onto the vocabulary at a time
    dataloader_workers: int = 2  # processes reading, rendering and encoding ahead of the GPU
    prefetch_factor: int = 2  # micro-batches each worker keeps ready
    last_turn_only: bool = False  # SFT: train only the last assistant turn of a multi-turn record
    save_every: int = 10
    save_total_limit: int = 2  # checkpoints kept (the newest)
    log_every: int = 1
    seed: int = 0
    # Seconds a collective may wait for the other ranks before the run fails (torch's default is 1,800):
    # a rank out of step then ends the job with an error instead of holding every GPU for half an hour.
    # It must exceed the longest wait of a healthy run (rank 0 fetching a checkpoint from S3, or exporting).
    ddp_timeout: int = 600
    deepspeed: str = "configs/deepspeed/zero2.json"
    # SFT: how long contexts are rendered, and the share of auxiliary OCR samples.
    render_style: str = "best-en"
    render_config: str | None = None
    ocr_ratio: float = 0.0
    # RL (GRPO).
    group_size: int = 16  # completions sampled per prompt
    epsilon_low: float = 0.2  # DAPO clip-higher: ratio clipped to [1 - low, 1 + high]
    epsilon_high: float = 0.28
    beta: float = 0.0  # KL coefficient; 0 (DAPO) loads no reference model
    num_iterations: int = 1  # optimisation passes over each generation batch
    steps_per_generation: int = 0  # micro-batches per generation batch (0: gradient_accumulation_steps)
    max_completion_length: int = 2048  # tokens a completion may take (a page of OCR is ~1,000)
    max_prompt_length: int = 0  # longer prompts are skipped and counted (0: max_length)
    use_vllm: bool = False  # generate with vLLM (GPU nodes, when installed)
    vllm_mode: str = "colocate"  # colocate (shares the training GPUs) or server
    vllm_gpu_memory_utilization: float = 0.3
    temperature: float = 1.0
    rewards: dict = field(default_factory=lambda: {"f1": 1.0, "format": 0.1})
    judge_endpoint: str | None = None
    judge_model: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_length", "save_every", "log_every", "per_device_batch_size",
                     "gradient_accumulation_steps", "loss_chunk_tokens", "prefetch_factor", "save_total_limit",
                     "ddp_timeout"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_pages", "dataloader_workers", "shuffle_buffer", "min_learning_rate", "weight_decay"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.lr_scheduler not in ("constant", "linear", "cosine"):
            raise UsageError(f"lr_scheduler: one of constant, linear, cosine; got {self.lr_scheduler!r}")
        if self.min_learning_rate > self.learning_rate:
            raise UsageError(f"min_learning_rate: must be <= learning_rate ({self.learning_rate}), "
                             f"got {self.min_learning_rate}")
        if self.attn_implementation not in ("auto", "flash_attention_2", "sdpa", "eager"):
            raise UsageError(f"attn_implementation: one of auto, flash_attention_2, sdpa, eager; "
                             f"got {self.attn_implementation!r}")
        if self.learning_rate <= 0:
            raise UsageError(f"learning_rate: must be > 0, got {self.learning_rate}")
        for name in ("num_iterations", "max_completion_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.beta < 0 or self.epsilon_low < 0 or self.epsilon_high < 0:
            raise UsageError("beta, epsilon_low and epsilon_high: must be >= 0")
        if self.vllm_mode not in ("colocate", "server"):
            raise UsageError(f"vllm_mode: colocate or server; got {self.vllm_mode!r}")
        if self.group_size < 2:
            raise UsageError(f"group_size: must be >= 2 (advantages compare within a group), got {self.group_size}")
        if not 0.0 <= self.ocr_ratio <= 1.0:
            raise UsageError(f"ocr_ratio: must be in [0, 1], got {self.ocr_ratio}")
        if self.warmup_steps < 0:
            raise UsageError(f"warmup_steps: must be >= 0, got {self.warmup_steps}")

    @property
    def deepspeed_path(self) -> Path:
        path = Path(self.deepspeed)
        return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def parse_config(argv=None, description: str = "") -> TrainConfig:
    """--config FILE plus overrides: --model, --data, --output-dir, --max-steps, and any other field."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML file in configs/train/")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by the launcher")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("tasks", "rewards"):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None)
    parser.add_argument("--tasks", default=None, help="task mixture, e.g. ocr=0.5,generation=0.5")
    parser.add_argument("--rewards", default=None, help="RL reward weights by name, e.g. f1=1,format=0.1")
    args = parser.parse_args(argv)
    if args.config and not Path(args.config).is_file():
        raise UsageError(f"--config {args.config}: no such file")
    values = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise UsageError(f"{args.config}: unknown keys {sorted(unknown)}")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, value in vars(args).items():
        if name in ("tasks", "rewards") and value is not None:
            values[name] = _weights(name, value)
        elif name in types and value is not None:
            values[name] = _convert(name, str(types[name]), value)
    return TrainConfig(**values)


def _weights(name: str, value: str) -> dict[str, float]:
    """`a=0.5,b` -> {"a": 0.5, "b": 1.0}."""
    weights = {}
    for item in value.split(","):
        key, _, weight = item.strip().partition("=")
        try:
            weights[key] = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"--{name}: weight of {key!r} must be a number, got {weight!r}") from None
    return weights


def _convert(name: str, kind: str, value: str):
    try:
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise UsageError(value)
            return value.lower() in ("true", "1", "yes")
        return {"int": int, "float": float}.get(kind, str)(value)
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')}: expected {kind}, got {value!r}") from None
