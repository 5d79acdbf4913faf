"""PDF backend: reportlab draws the placed runs into a PDF, poppler rasterizes it.

This is the path of Glyph's own renderer (reportlab + pdf2image), kept for
parity checks and for document-style PDFs. It draws the same layout as the
fast backend; only antialiasing differs. Horizontal scale is applied as Glyph
applies it: by resizing the rasterized page.
"""

from __future__ import annotations

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


def _register(path: str) -> str:
    name = "F" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(name, path))
    return name


def _rgb(value: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in parse_color(value))


class PdfRasterizer:
    name = "pdf"

    def build_pdf(self, cfg: RenderConfig, chain: FontChain, pages: list[PageLayout]) -> bytes:
        names = [_register(str(face.path)) for face in chain.faces]
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
                    canvas.setFont(names[run.font], cfg.font_size)
                    canvas.drawString(run.x, y, run.text)
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
