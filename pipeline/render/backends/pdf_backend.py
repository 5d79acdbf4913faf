"""PDF backend: reportlab draws the placed runs into a PDF, poppler rasterizes it.

This is the path of Glyph's own renderer (reportlab + pdf2image), kept for
parity checks and for document-style PDFs. It draws the same layout as the
fast backend; only antialiasing differs. Horizontal scale is applied as Glyph
applies it: by resizing the rasterized page.

Runs reportlab cannot draw as text, shaped runs (their glyphs are HarfBuzz's
choice, often with no character of their own) and fonts with PostScript
outlines (Noto CJK), are drawn as filled glyph outlines read with fontTools;
colour bitmap glyphs (emoji, CBDT) as their PNG images.
"""

from __future__ import annotations

import functools
import hashlib
import io
from typing import Iterator

import numpy as np
from pdf2image import convert_from_bytes
from PIL import Image
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from pipeline.render.backends import baseline_offset, crop_box
from pipeline.render.config import RenderConfig, parse_color
from pipeline.render.fonts import FontChain
from pipeline.render.layout import PageLayout

BATCH_PAGES = 20  # pages per pdftoppm call, as in Glyph


@functools.lru_cache(maxsize=64)
def _register(path: str) -> str | None:
    """reportlab's name for the font, or None when reportlab cannot embed it (PostScript outlines)."""
    from reportlab.pdfbase.ttfonts import TTFError

    name = "F" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name not in pdfmetrics.getRegisteredFontNames():
        try:
            pdfmetrics.registerFont(TTFont(name, path))
        except TTFError:
            return None
    return name


@functools.lru_cache(maxsize=64)
def _outline_font(path: str):
    from fontTools.ttLib import TTFont as FontToolsFont

    font = FontToolsFont(path, fontNumber=0, lazy=True)
    outlined = "glyf" in font or "CFF " in font or "CFF2" in font  # colour bitmap fonts have none
    return (font, font.getGlyphSet() if outlined else {}, font.getGlyphOrder(), font.getBestCmap() or {},
            font["head"].unitsPerEm)


def _draw_outlines(canvas, path: str, size: float, glyphs: list[tuple[int, float, float]]) -> None:
    """Fill glyph outlines: (glyph id, x, y) in PDF points, y up, at the baseline."""
    from fontTools.pens.basePen import BasePen

    font, glyph_set, order, _, upem = _outline_font(path)
    scale = size / upem
    pdf_path = canvas.beginPath()

    class Pen(BasePen):
        def __init__(self, x: float, y: float):
            super().__init__(glyph_set)
            self.x, self.y = x, y

        def _point(self, point):
            return self.x + point[0] * scale, self.y + point[1] * scale

        def _moveTo(self, point):
            pdf_path.moveTo(*self._point(point))

        def _lineTo(self, point):
            pdf_path.lineTo(*self._point(point))

        def _curveToOne(self, one, two, three):
            pdf_path.curveTo(*self._point(one), *self._point(two), *self._point(three))

        def _qCurveToOne(self, control, end):
            start = self._getCurrentPoint()
            first = (start[0] + 2 / 3 * (control[0] - start[0]), start[1] + 2 / 3 * (control[1] - start[1]))
            second = (end[0] + 2 / 3 * (control[0] - end[0]), end[1] + 2 / 3 * (control[1] - end[1]))
            self._curveToOne(first, second, end)

        def _closePath(self):
            pdf_path.close()

    if "CBDT" in font:
        _draw_bitmaps(canvas, font, size, glyphs)
        return
    drawn = False
    for glyph, x, y in glyphs:
        if 0 <= glyph < len(order) and order[glyph] in glyph_set:
            glyph_set[order[glyph]].draw(Pen(x, y))
            drawn = True
    if drawn:
        canvas.drawPath(pdf_path, stroke=0, fill=1)


def _draw_bitmaps(canvas, font, size: float, glyphs: list[tuple[int, float, float]]) -> None:
    """Colour bitmap glyphs (CBDT, as in Noto Color Emoji): each one's PNG at the strike's scale."""
    from reportlab.lib.utils import ImageReader

    strike = font["CBDT"].strikeData[0]
    scale = size / font["CBLC"].strikes[0].bitmapSizeTable.ppemY
    order = font.getGlyphOrder()
    for glyph, x, y in glyphs:
        bitmap = strike.get(order[glyph]) if 0 <= glyph < len(order) else None
        if bitmap is None or not bitmap.imageData.startswith(b"\x89PNG"):
            continue
        metrics = bitmap.metrics
        canvas.drawImage(ImageReader(io.BytesIO(bitmap.imageData)), x + metrics.BearingX * scale,
                         y - (metrics.height - metrics.BearingY) * scale, metrics.width * scale,
                         metrics.height * scale, mask="auto")


def _run_glyphs(run, path: str, size: float, y: float) -> list[tuple[int, float, float]]:
    """A run's glyphs and their positions: HarfBuzz's for a shaped run, else the cmap and advances."""
    if run.glyphs is not None:
        return [(glyph, run.x + dx, y - dy) for glyph, (dx, dy) in zip(run.glyphs, run.offsets)]
    font, _, order, cmap, upem = _outline_font(path)
    metrics = font["hmtx"].metrics
    out, x = [], run.x
    for char in run.text:
        name = cmap.get(ord(char))
        if name is None:
            continue
        out.append((font.getGlyphID(name), x, y))
        x += metrics[name][0] * size / upem
    return out


def _rgb(value: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in parse_color(value))


class PdfRasterizer:
    name = "pdf"

    def build_pdf(self, cfg: RenderConfig, chain: FontChain, pages: list[PageLayout]) -> bytes:
        width, height = cfg.page_size
        ascent = baseline_offset(cfg, chain)
        buffer = io.BytesIO()
        canvas = Canvas(buffer, pagesize=(width, height), pageCompression=0)
        for page in pages:
            canvas.setFillColorRGB(*_rgb(cfg.page_bg_color))
            canvas.rect(0, 0, width, height, stroke=0, fill=1)
            self._draw_blocks(canvas, cfg, page)
            for line in page.lines:
                y = height - (line.top + ascent)
                for run in line.drawn_runs():
                    canvas.setFillColorRGB(*_rgb(run.color or cfg.font_color))
                    path = chain.paths[run.font]
                    name = _register(path) if run.glyphs is None else None
                    if name is not None:
                        canvas.setFont(name, cfg.font_size)
                        canvas.drawString(run.x, y, run.text)
                    else:
                        _draw_outlines(canvas, path, cfg.font_size, _run_glyphs(run, path, cfg.font_size, y))
            canvas.showPage()
        canvas.save()
        return buffer.getvalue()

    def rasterize(self, cfg: RenderConfig, chain: FontChain, pages: list[PageLayout]) -> Iterator[np.ndarray]:
        pdf = self.build_pdf(cfg, chain, pages)
        width_px, height_px = cfg.page_pixels
        size = (max(1, int(width_px * cfg.horizontal_scale)), height_px)
        gray = cfg.is_gray
        for first in range(1, len(pages) + 1, BATCH_PAGES):
            last = min(first + BATCH_PAGES - 1, len(pages))
            images = convert_from_bytes(pdf, size=(width_px, height_px), first_page=first, last_page=last,
                                        grayscale=gray)
            for number, image in enumerate(images, start=first):
                page = pages[number - 1]
                if image.size != size:
                    image = image.resize(size, Image.Resampling.BILINEAR)
                width, height = crop_box(cfg, page, number == len(pages), size)
                image = image.crop((0, 0, width, height)).convert("L" if gray else "RGB")
                yield np.asarray(image)

    @staticmethod
    def _draw_blocks(canvas, cfg: RenderConfig, page: PageLayout) -> None:
        fill = cfg.para_bg_color.upper() != cfg.page_bg_color.upper()
        if not (fill or cfg.border_width > 0):
            return
        pad, page_height = cfg.border_padding, cfg.page_size[1]
        left, width = cfg.text_left - pad, cfg.text_width + 2 * pad
        for block in page.blocks:
            bottom = page_height - (block.bottom + pad)
            height = block.bottom - block.top + 2 * pad
            canvas.setFillColorRGB(*_rgb(cfg.para_bg_color))
            canvas.setStrokeColorRGB(*_rgb(cfg.para_border_color))
            canvas.setLineWidth(cfg.border_width)
            canvas.rect(left, bottom, width, height, stroke=int(cfg.border_width > 0), fill=int(fill))
