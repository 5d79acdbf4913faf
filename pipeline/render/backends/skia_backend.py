"""Fast backend: glyph runs drawn straight to an 8-bit raster with Skia.

Glyphs use unhinted, subpixel-positioned advances (linear metrics), the same
advances the layout measured, so every run lands where the layout placed it.
Horizontal scale is a canvas transform: the same squeeze Glyph applies by
resizing the page image, without the resampling blur.

Ink as poppler draws it. Skia's glyph masks carry a contrast curve that depends
on the text colour's luminance: black text came out 0.74x as dark as through
reportlab + poppler (Glyph's path, and the model's at serving time), and light
text on dark pages 1.4x as bright. So text is drawn as glyph masks into an alpha
layer with black ink, whose curve `coverage_curve()` undoes (it is measured once
against Skia's own outline coverage, which is linear), and the layer is then
blended linearly in the text colour, as poppler blends. docs/benchmarks.md has
the ink ratios.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
import skia

from pipeline.render.backends import baseline_offset, crop_box
from pipeline.render.config import RenderConfig, parse_color
from pipeline.render.fonts import FONTS_DIR, SANS, FontChain
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


@functools.lru_cache(maxsize=1)
def coverage_curve() -> np.ndarray:
    """uint8[256]: a black glyph mask's value -> the linear coverage of the outline under it.

    Measured by drawing a line of text both ways (glyph masks; outlines, whose coverage is linear) at
    several sizes and averaging the outline's coverage for each mask value; interpolated where a value
    never occurs, non-decreasing, and full coverage where the masks are full.
    """
    sample = "The quick brown fox jumps over the lazy dog 0123456789 @#%&WMQ ,.;:!?()[]{} ilj"
    sums, counts = np.zeros(256), np.zeros(256)
    for size in (5.0, 7.0, 9.0, 11.0, 14.0, 21.0, 30.0):
        font = _font(str(FONTS_DIR / SANS), size)
        glyphs = font.textToGlyphs(sample)
        positions = font.getXPos(glyphs)
        width, height, baseline = int(positions[-1] + 3 * size), int(2 * size) + 4, round(1.4 * size) + 2
        masks = []
        for outlines in (False, True):
            surface = skia.Surface.MakeRaster(skia.ImageInfo.MakeA8(width, height))
            canvas = surface.getCanvas()
            canvas.clear(skia.ColorTRANSPARENT)
            paint = skia.Paint(AntiAlias=True, Color=skia.ColorBLACK)
            if outlines:
                for glyph, x in zip(glyphs, positions):
                    path = font.getPath(glyph)
                    if path is not None:
                        path.offset(2 + x, baseline)
                        canvas.drawPath(path, paint)
            else:
                canvas.drawTextBlob(skia.TextBlob.MakeFromString(sample, font), 2, baseline, paint)
            masks.append(_alpha(surface).astype(np.int64).ravel())
        np.add.at(sums, masks[0], masks[1])
        np.add.at(counts, masks[0], 1)
    seen = counts >= 4
    values = np.arange(256)
    full = int(np.median(masks[0][masks[1] == 255])) if (masks[1] == 255).any() else 255
    seen[full:] = False
    points_x = np.concatenate([values[seen], [full, 255]])
    points_y = np.concatenate([sums[seen] / counts[seen], [255, 255]])
    curve = np.interp(values, points_x, points_y)
    curve[0] = 0
    return np.clip(np.round(np.maximum.accumulate(curve)), 0, 255).astype(np.uint8)


def _has_blocks(cfg: RenderConfig) -> bool:
    return cfg.para_bg_color.upper() != cfg.page_bg_color.upper() or cfg.border_width > 0


def _group_runs(cfg: RenderConfig, page: PageLayout, chain: FontChain, ascent: float) -> tuple[dict, list]:
    """The page's runs with their baselines, by text colour; and those of colour glyphs (emoji), which are
    drawn as they are, not as a mask."""
    by_color: dict[str, list] = {}
    colored: list = []
    for line in page.lines:
        for run in line.drawn_runs():
            if run.glyphs is not None and chain.faces[run.font].color:
                colored.append((run, line.top + ascent))
            else:
                by_color.setdefault(run.color or cfg.font_color, []).append((run, line.top + ascent))
    return by_color, colored


def _mask(cfg: RenderConfig, fonts: list, runs: list, size: tuple[int, int]) -> np.ndarray:
    """The runs' glyph masks drawn in black into an alpha layer (Skia's curve still in it)."""
    layer = skia.Surface.MakeRaster(skia.ImageInfo.MakeA8(*size))
    ink = layer.getCanvas()
    ink.clear(skia.ColorTRANSPARENT)
    ink.scale(cfg.scale * cfg.horizontal_scale, cfg.scale)
    black = skia.Paint(AntiAlias=True, Color=skia.ColorBLACK)
    for run, baseline in runs:
        blob = _blob(run, fonts[run.font], baseline)
        if blob is not None:
            shaped = run.glyphs is not None  # positioned absolutely
            ink.drawTextBlob(blob, 0 if shaped else run.x, 0 if shaped else baseline, black)
    return _alpha(layer)


def _blob(run, font: skia.Font, baseline: float):
    """A run's text blob: HarfBuzz's glyphs at their positions (absolute), or the run's characters."""
    if run.glyphs is None:
        return skia.TextBlob.MakeFromString(run.text, font)
    if not run.glyphs:
        return None
    points = [skia.Point(run.x + dx, baseline + dy) for dx, dy in run.offsets]
    return skia.TextBlob.MakeFromPosText(np.asarray(run.glyphs, dtype=np.uint16).tobytes(), points, font,
                                         skia.TextEncoding.kGlyphID)


def _draw_colored(image, cfg: RenderConfig, fonts: list, runs: list):
    """Colour glyphs drawn in their colours on a transparent layer, composited onto the page (in gray on a
    gray page)."""
    from PIL import Image

    width, height = image.size
    info = skia.ImageInfo.Make(width, height, skia.ColorType.kRGBA_8888_ColorType, skia.AlphaType.kUnpremul_AlphaType)
    layer = skia.Surface.MakeRaster(info)
    canvas = layer.getCanvas()
    canvas.clear(skia.ColorTRANSPARENT)
    canvas.scale(cfg.scale * cfg.horizontal_scale, cfg.scale)
    for run, baseline in runs:
        blob = _blob(run, fonts[run.font], baseline)
        if blob is not None:
            canvas.drawTextBlob(blob, 0, 0, skia.Paint(AntiAlias=True))
    glyphs = Image.fromarray(layer.makeImageSnapshot().toarray(colorType=skia.ColorType.kRGBA_8888_ColorType,
                                                               alphaType=skia.AlphaType.kUnpremul_AlphaType), "RGBA")
    mode = image.mode
    return Image.alpha_composite(image.convert("RGBA"), glyphs).convert(mode)


def _alpha(surface: skia.Surface) -> np.ndarray:
    info = surface.imageInfo()
    pixels = surface.makeImageSnapshot().toarray(colorType=skia.ColorType.kAlpha_8_ColorType)
    return pixels.reshape(info.height(), info.width())


def _color(value) -> int:
    r, g, b = parse_color(value) if isinstance(value, str) else value
    return skia.ColorSetRGB(r, g, b)


class SkiaRasterizer:
    name = "skia"

    def rasterize(self, cfg: RenderConfig, chain: FontChain, pages: list[PageLayout]) -> Iterator[np.ndarray]:
        fonts = [_font(path, cfg.font_size) for path in chain.paths]
        width_px, height_px = cfg.page_pixels
        size = (max(1, int(width_px * cfg.horizontal_scale)), height_px)
        gray = cfg.is_gray
        color_type = skia.ColorType.kGray_8_ColorType if gray else skia.ColorType.kRGBA_8888_ColorType
        ascent = baseline_offset(cfg, chain)
        plain = gray and not _has_blocks(cfg)  # one gray, nothing under the text but the page
        for page in pages:
            width, height = crop_box(cfg, page, page is pages[-1], size)
            by_color, colored = _group_runs(cfg, page, chain, ascent)
            if plain and not colored and len(by_color) <= 1:
                yield self._text_on_plain_page(cfg, fonts, by_color, (width, height))
                continue
            info = skia.ImageInfo.Make(width, height, color_type, skia.AlphaType.kOpaque_AlphaType)
            surface = skia.Surface.MakeRaster(info)
            canvas = surface.getCanvas()
            canvas.clear(_color(cfg.page_bg_color))
            canvas.scale(cfg.scale * cfg.horizontal_scale, cfg.scale)
            self._draw_blocks(canvas, cfg, page)
            pixels = surface.makeImageSnapshot().toarray(colorType=color_type)
            pixels = pixels[:, :, 0].copy() if gray and pixels.ndim == 3 else (pixels if gray else pixels[:, :, :3].copy())
            yield self._draw_text(pixels, cfg, fonts, by_color, colored)

    @staticmethod
    def _text_on_plain_page(cfg: RenderConfig, fonts: list, by_color: dict, size: tuple[int, int]) -> np.ndarray:
        """The common case in one pass: the text's mask mapped straight to gray levels (background to ink)."""
        from PIL import Image

        background = parse_color(cfg.page_bg_color)[0]
        if not by_color:
            return np.full((size[1], size[0]), background, dtype=np.uint8)
        (color, runs), = by_color.items()
        ink = parse_color(color)[0]
        levels = [round(background + (ink - background) * c / 255) for c in coverage_curve().tolist()]
        return np.asarray(Image.fromarray(_mask(cfg, fonts, runs, size)).point(levels))

    @staticmethod
    def _draw_text(pixels: np.ndarray, cfg: RenderConfig, fonts: list, by_color: dict, colored: list) -> np.ndarray:
        """Each text colour's runs as black glyph masks in an alpha layer, its curve undone, pasted onto the
        page through that mask by PIL (linear blending, and an order of magnitude faster than Skia's image
        draw into 8-bit gray)."""
        from PIL import Image

        curve = coverage_curve().tolist()
        image = Image.fromarray(pixels)
        height, width = pixels.shape[:2]
        for color, runs in by_color.items():
            mask = Image.fromarray(_mask(cfg, fonts, runs, (width, height))).point(curve)
            rgb = parse_color(color)
            image.paste(rgb[0] if image.mode == "L" else rgb, (0, 0, width, height), mask)
        if colored:
            image = _draw_colored(image, cfg, fonts, colored)
        return np.asarray(image) if by_color or colored else pixels  # read-only: pages are not changed later

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
