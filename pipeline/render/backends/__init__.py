"""Rasterizers: placed pages (layout) -> pixel arrays. One interface, picked by name.

`skia` (default) draws glyph runs straight to pixels; `pdf` builds a PDF with
reportlab and rasterizes it with poppler, the path of Glyph's own renderer.
Both draw the same layout, so page breaks and page texts are identical.
"""

from __future__ import annotations

import math
from typing import Iterator, Protocol

import numpy as np

from pipeline.render.config import RenderConfig
from pipeline.render.fonts import FontChain
from pipeline.render.layout import PageLayout

BACKENDS = ("skia", "pdf")


class Rasterizer(Protocol):
    name: str

    def rasterize(self, cfg: RenderConfig, chain: FontChain, pages: list[PageLayout]) -> Iterator[np.ndarray]:
        """Yield one uint8 array per page: (H, W) when the palette is gray, else (H, W, 3)."""


def get_rasterizer(name: str) -> Rasterizer:
    if name == "skia":
        from pipeline.render.backends.skia_backend import SkiaRasterizer

        return SkiaRasterizer()
    if name == "pdf":
        from pipeline.render.backends.pdf_backend import PdfRasterizer

        return PdfRasterizer()
    raise ValueError(f"backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def baseline_offset(cfg: RenderConfig, chain: FontChain) -> float:
    """Distance from a line's top to its baseline: the font's box centred in the leading."""
    face = chain.primary
    box = (face.ascent + face.descent) * cfg.font_size
    return (cfg.line_height - box) / 2 + face.ascent * cfg.font_size


def crop_box(cfg: RenderConfig, page: PageLayout, is_last: bool, size: tuple[int, int]) -> tuple[int, int]:
    """Final (width, height) in pixels after Glyph's auto-crop options.

    Glyph crops to the last ink plus the margin; the layout knows where its
    lines end, so no pixel scan is needed.
    """
    width, height = size
    sx, sy = cfg.scale * cfg.horizontal_scale, cfg.scale
    box = _visible_box(cfg) if page.blocks else None  # a paragraph background or border is ink too
    if cfg.auto_crop_width and page.lines:
        right = max(line.x1 for line in page.lines)
        if box is not None:
            right = max(right, cfg.text_left + cfg.text_width + box)
        width = min(width, max(1, math.ceil((right + cfg.margin_x) * sx)))
    if cfg.auto_crop_last_page and is_last and page.lines:
        bottom = page.lines[-1].top + cfg.line_height
        if box is not None:
            bottom = max(bottom, page.blocks[-1].bottom + box)
        height = min(height, max(1, math.ceil((bottom + cfg.margin_y) * sy)))
    return width, height


def _visible_box(cfg: RenderConfig) -> float | None:
    """How far a visible paragraph box reaches past the text (padding, half its border), or None when
    neither its fill nor its border stands out from the page (by Glyph's crop tolerance, 5 gray levels)."""
    from pipeline.render.config import parse_color

    def differs(color: str) -> bool:
        return abs(sum(parse_color(color)) - sum(parse_color(cfg.page_bg_color))) / 3 > 5

    border = cfg.border_width > 0 and differs(cfg.para_border_color)
    if not (differs(cfg.para_bg_color) or border):
        return None
    return cfg.border_padding + (cfg.border_width / 2 if border else 0.0)


def line_boxes(cfg: RenderConfig, page: PageLayout) -> list[dict]:
    """Per line: its box [x0, y0, x1, y1] in pixels of the final page (floats) and the characters of the
    document's text it holds, [start, end) (integers): one type per field, so Arrow and `datasets` read
    them typed."""
    sx, sy = cfg.scale * cfg.horizontal_scale, cfg.scale
    return [
        {"box": [round(line.x0 * sx, 1), round(line.top * sy, 1), round(line.x1 * sx, 1),
                 round((line.top + cfg.line_height) * sy, 1)], "start": int(line.start), "end": int(line.end)}
        for line in page.lines
    ]
