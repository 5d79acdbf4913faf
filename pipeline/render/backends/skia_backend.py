"""Fast backend: glyph runs drawn straight to an 8-bit raster with Skia.

Glyphs use unhinted, subpixel-positioned advances (linear metrics), the same
advances the layout measured, so every run lands where the layout placed it.
Horizontal scale is a canvas transform: the same squeeze Glyph applies by
resizing the page image, without the resampling blur.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
import skia

from pipeline.render.backends import baseline_offset, crop_box
from pipeline.render.config import RenderConfig, parse_color
from pipeline.render.fonts import FontChain
from pipeline.render.layout import PageLayout


@functools.lru_cache(maxsize=32)
def _typeface(path: str) -> skia.Typeface:
    typeface = skia.Typeface.MakeFromFile(path)
    if typeface is None:
        raise ValueError(f"font-path: skia cannot load font {path!r}")
    return typeface


def _font(path: str, size: float) -> skia.Font:
    font = skia.Font(_typeface(path), size)
    font.setHinting(skia.FontHinting.kNone)
    font.setSubpixel(True)
    font.setLinearMetrics(True)
    font.setEdging(skia.Font.Edging.kAntiAlias)
    return font


def _color(value) -> int:
    r, g, b = parse_color(value) if isinstance(value, str) else value
    return skia.ColorSetRGB(r, g, b)


class SkiaRasterizer:
    name = "skia"

    def rasterize(self, cfg: RenderConfig, chain: FontChain, pages: list[PageLayout]) -> Iterator[np.ndarray]:
        fonts = [_font(str(face.path), cfg.font_size) for face in chain.faces]
        width_px, height_px = cfg.page_pixels
        size = (max(1, int(width_px * cfg.horizontal_scale)), height_px)
        gray = cfg.is_gray
        color_type = skia.ColorType.kGray_8_ColorType if gray else skia.ColorType.kRGBA_8888_ColorType
        ascent = baseline_offset(cfg, chain)
        text_paint = skia.Paint(AntiAlias=True, Color=_color(cfg.font_color))
        for page in pages:
            width, height = crop_box(cfg, page, page is pages[-1], size)
            info = skia.ImageInfo.Make(width, height, color_type, skia.AlphaType.kOpaque_AlphaType)
            surface = skia.Surface.MakeRaster(info)
            canvas = surface.getCanvas()
            canvas.clear(_color(cfg.page_bg_color))
            canvas.scale(cfg.scale * cfg.horizontal_scale, cfg.scale)
            self._draw_blocks(canvas, cfg, page)
            for line in page.lines:
                baseline = line.top + ascent
                for run in line.drawn_runs():
                    paint = text_paint if run.color is None else skia.Paint(AntiAlias=True, Color=_color(run.color))
                    blob = skia.TextBlob.MakeFromString(run.text, fonts[run.font])
                    if blob is not None:
                        canvas.drawTextBlob(blob, run.x, baseline, paint)
            pixels = surface.makeImageSnapshot().toarray(colorType=color_type)
            yield pixels[:, :, 0].copy() if gray and pixels.ndim == 3 else (pixels if gray else pixels[:, :, :3].copy())

    @staticmethod
    def _draw_blocks(canvas, cfg: RenderConfig, page: PageLayout) -> None:
        fill = cfg.para_bg_color.upper() != cfg.page_bg_color.upper()
        if not (fill or cfg.border_width > 0):
            return
        pad = cfg.border_padding
        left, right = cfg.text_left - pad, cfg.text_left + cfg.text_width + pad
        for block in page.blocks:
            rect = skia.Rect.MakeLTRB(left, block.top - pad, right, block.bottom + pad)
            if fill:
                canvas.drawRect(rect, skia.Paint(Color=_color(cfg.para_bg_color)))
            if cfg.border_width > 0:
                stroke = skia.Paint(Color=_color(cfg.para_border_color), Style=skia.Paint.kStroke_Style,
                                    StrokeWidth=cfg.border_width, AntiAlias=True)
                canvas.drawRect(rect, stroke)
