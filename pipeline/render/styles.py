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


class FixedStyle:
    """Every document in one config."""

    def __init__(self, cfg: RenderConfig):
        self.cfg = cfg

    def choose(self, key: str, kind: str = "text", text: str | None = None) -> RenderConfig:
        return self.cfg

    def describe(self) -> dict:
        return self.cfg.to_glyph_dict()


class StyleMixture:
    """A style per document, drawn from weights by a seeded hash of the document key.

    Source code (kind "code") always gets the `code` style. The name `random`
    stands for the style sampler, seeded with the same seed and key.
    """

    def __init__(self, weights: dict[str, float], seed: int = 0, min_px_per_em: float | None = None):
        self.weights, self.seed, self.min_px_per_em = weights, seed, min_px_per_em
        self._names, self._weights = list(weights), list(weights.values())
        self._styles = {name: load_style(name) for name in weights if name != RANDOM}
        self._code = load_style("code")
        for name, cfg in [*self._styles.items(), ("code", self._code)]:
            if min_px_per_em is not None and cfg.px_per_em < min_px_per_em:
                raise RenderConfigError(f"min-px-per-em: style {name!r} draws {cfg.px_per_em:.1f} px per em, "
                                        f"below the floor of {min_px_per_em:g}")

    def choose(self, key: str, kind: str = "text", text: str | None = None) -> RenderConfig:
        """`text` (the document's) lets the sampler pick a family for its script."""
        if kind == "code":
            return self._code
        import random

        name = random.Random(f"{self.seed}:{key}").choices(self._names, self._weights)[0]
        if name == RANDOM:
            from pipeline.render.sampler import StyleSampler

            return StyleSampler(self.seed, self.min_px_per_em).sample(key, text)
        return self._styles[name]

    def describe(self) -> dict:
        return {"mixture": self.weights, "seed": self.seed, "code_files": "code", "min_px_per_em": self.min_px_per_em}


def parse_mixture(spec: str) -> dict[str, float]:
    """'document=0.4,web=0.2' -> {'document': 0.4, 'web': 0.2}, checked; a bare name weighs 1.

    >>> parse_mixture("document=0.4, dark=0.1")
    {'document': 0.4, 'dark': 0.1}
    >>> parse_mixture("random")
    {'random': 1.0}
    """
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in available_styles():
            raise RenderConfigError(f"styles: unknown style {name!r}; choose from {', '.join(available_styles())}")
        try:
            weight = float(value) if value.strip() else 1.0  # a bare name weighs 1
        except ValueError:
            raise RenderConfigError(f"styles: weight of {name!r} must be a number, got {value!r}") from None
        if weight < 0:
            raise RenderConfigError(f"styles: weight of {name!r} must be >= 0, got {weight}")
        weights[name] = weight
    if not weights or sum(weights.values()) <= 0:
        raise RenderConfigError(f"styles: need at least one positive weight, got {spec!r}")
    return weights
