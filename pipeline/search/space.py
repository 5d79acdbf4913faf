"""The search space: a candidate is a dict of genes within the style sampler's ranges.

Genes are plain JSON values, so candidates persist and an LLM can read and
write them; `to_config` turns genes into a validated RenderConfig, and
`repair` clamps or drops what an LLM got wrong.
"""

from __future__ import annotations

import random

from pipeline.render import fonts
from pipeline.render.config import RenderConfig, RenderConfigError
from pipeline.render.sampler import DARK, FONT_SIZES, H_SCALES, LIGHT, PAGE_SIZES

FAMILIES = {"sans": fonts.SANS, "serif": fonts.SERIF, "mono": fonts.MONO}
PALETTES = LIGHT + DARK
ALIGNMENTS = ("LEFT", "JUSTIFY", "RIGHT", "CENTER")

# gene -> ("int", low, high) | ("choice", values)
GENES = {
    "dpi": ("int", 45, 150),
    "page": ("choice", tuple(sorted(PAGE_SIZES))),
    "family": ("choice", tuple(FAMILIES)),
    "font_size": ("choice", FONT_SIZES),
    "line_gap": ("choice", (0, 0.5, 1, 1.5, 2, 3)),
    "margin_x": ("int", 10, 40),
    "margin_y": ("int", 10, 40),
    "alignment": ("choice", ALIGNMENTS),
    "first_line_indent": ("int", 0, 30),
    "space_after": ("int", 0, 12),
    "horizontal_scale": ("choice", tuple(s for s, _ in H_SCALES)),
    "palette": ("int", 0, len(PALETTES) - 1),
    "auto_crop": ("choice", (True, False)),
}
BEST_EN = {"dpi": 72, "page": "A4", "family": "sans", "font_size": 9, "line_gap": 1, "margin_x": 10,
           "margin_y": 10, "alignment": "LEFT", "first_line_indent": 0, "space_after": 0,
           "horizontal_scale": 1.0, "palette": 0, "auto_crop": True}


def to_config(genes: dict, name: str = "searched") -> RenderConfig:
    """The RenderConfig a candidate stands for (raises RenderConfigError if invalid)."""
    background, foreground = PALETTES[genes["palette"]]
    size = genes["font_size"]
    return RenderConfig(
        page_size=tuple(float(v) for v in PAGE_SIZES[genes["page"]]), dpi=genes["dpi"],
        margin_x=genes["margin_x"], margin_y=genes["margin_y"], font_path=FAMILIES[genes["family"]],
        font_size=size, line_height=size + genes["line_gap"], alignment=genes["alignment"],
        first_line_indent=genes["first_line_indent"], space_after=genes["space_after"],
        horizontal_scale=genes["horizontal_scale"], font_color=foreground, page_bg_color=background,
        para_bg_color=background, para_border_color=background, auto_crop_width=genes["auto_crop"],
        auto_crop_last_page=genes["auto_crop"], style=name,
    )


def random_gene(name: str, rng: random.Random):
    spec = GENES[name]
    return rng.randint(spec[1], spec[2]) if spec[0] == "int" else rng.choice(spec[1])


def random_candidate(rng: random.Random) -> dict:
    return {name: random_gene(name, rng) for name in GENES}


def mutate(genes: dict, rng: random.Random, rate: float = 0.25) -> dict:
    """Resample each gene with probability `rate` (at least one), integers often by a small step."""
    child = dict(genes)
    names = [n for n in GENES if rng.random() < rate] or [rng.choice(list(GENES))]
    for name in names:
        spec = GENES[name]
        if spec[0] == "int" and rng.random() < 0.6:
            step = max(1, (spec[2] - spec[1]) // 8)
            child[name] = min(spec[2], max(spec[1], child[name] + rng.choice((-step, step))))
        else:
            child[name] = random_gene(name, rng)
    return child


def crossover(a: dict, b: dict, rng: random.Random) -> dict:
    return {name: (a if rng.random() < 0.5 else b)[name] for name in GENES}


def repair(proposal, fallback: dict) -> dict | None:
    """A proposal from outside (an LLM) made valid: out-of-range numbers clamped, unknown values
    replaced by the fallback's, unknown genes ignored. None if it is not a dict or stays invalid."""
    if not isinstance(proposal, dict):
        return None
    genes = dict(fallback)
    for name, spec in GENES.items():
        if name not in proposal:
            continue
        value = proposal[name]
        if spec[0] == "int":
            try:
                genes[name] = min(spec[2], max(spec[1], int(round(float(value)))))
            except (TypeError, ValueError):
                pass
        elif value in spec[1]:
            genes[name] = value
        elif isinstance(value, str) and value.upper() in spec[1]:
            genes[name] = value.upper()
    try:
        to_config(genes)
    except RenderConfigError:
        return None
    return genes


def key(genes: dict) -> str:
    """A stable identity for a candidate (evaluation cache and persisted state)."""
    return ",".join(f"{name}={genes[name]}" for name in GENES)
