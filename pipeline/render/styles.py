"""Named styles: Glyph-format JSON files in configs/render/, plus the random sampler."""

from __future__ import annotations

from pathlib import Path

from pipeline import REPO_ROOT
from pipeline.render.config import RenderConfig, RenderConfigError, load_render_config

STYLES_DIR = REPO_ROOT / "configs" / "render"
DEFAULT_STYLE = "best-en"
RANDOM = "random"


def available_styles() -> list[str]:
    return sorted(p.stem for p in STYLES_DIR.glob("*.json")) + [RANDOM]


def load_style(name: str) -> RenderConfig:
    path = STYLES_DIR / f"{name}.json"
    if not path.is_file():
        raise RenderConfigError(f"style: unknown style {name!r}; choose one of {', '.join(available_styles())}")
    cfg = load_render_config(path)
    return cfg if cfg.style != "custom" else cfg.replace(style=name)


def resolve_config(style: str | None = None, config: str | Path | None = None) -> RenderConfig:
    """--config FILE wins, then --style NAME, then the paper's best config."""
    if config is not None:
        return load_render_config(config)
    return load_style(style or DEFAULT_STYLE)
