"""TrainConfig: one YAML file per stage in configs/train/, command-line flags override it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline import REPO_ROOT


@dataclass
class TrainConfig:
    model: str = "out/tiny-model"
    data: str = "out/demo/rendered"
    output_dir: str = "out/pretrain"
    max_steps: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_length: int = 2048
    tasks: dict = field(default_factory=lambda: {"ocr": 1.0})
    max_pages: int = 2
    shuffle_buffer: int = 0  # samples held for shuffling (0: stream order)
    save_every: int = 10
    log_every: int = 1
    seed: int = 0
    deepspeed: str = "configs/deepspeed/zero2.json"
    # SFT: how long contexts are rendered, and the share of auxiliary OCR samples.
    render_style: str = "best-en"
    render_config: str | None = None
    ocr_ratio: float = 0.0
    # RL (GRPO).
    group_size: int = 16
    epsilon_low: float = 0.2
    epsilon_high: float = 0.28
    beta: float = 0.04
    max_new_tokens: int = 64
    temperature: float = 1.0
    rewards: dict = field(default_factory=lambda: {"f1": 1.0, "format": 0.1})
    judge_endpoint: str | None = None
    judge_model: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_length", "save_every", "log_every", "max_pages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate}")
        if self.group_size < 2:
            raise ValueError(f"group_size: must be >= 2 (advantages compare within a group), got {self.group_size}")
        if not 0.0 <= self.ocr_ratio <= 1.0:
            raise ValueError(f"ocr_ratio: must be in [0, 1], got {self.ocr_ratio}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be >= 0, got {self.warmup_steps}")

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
    args = parser.parse_args(argv)
    values = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"{args.config}: unknown keys {sorted(unknown)}")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, value in vars(args).items():
        if name == "tasks" and value is not None:
            values["tasks"] = {k: float(w or 1) for k, _, w in (p.partition("=") for p in value.split(","))}
        elif name in types and value is not None:
            values[name] = {"int": int, "float": float}.get(str(types[name]), str)(value)
    return TrainConfig(**values)
