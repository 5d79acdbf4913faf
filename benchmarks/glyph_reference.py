"""A faithful re-implementation of Glyph's original rendering procedure, for benchmarks.

As in Glyph's word2png_function.py: reportlab SimpleDocTemplate; the text
XML-escaped, runs of two or more spaces turned into &nbsp;, split on newlines
and re-joined with <br/> in Paragraphs of 30 lines; pdf2image
convert_from_bytes in batches of 20 pages at the config dpi; horizontal
scale by resizing; width and last-page auto-crop by background tolerance 5;
RGB PNG. Written from the published description, not copied.
"""

from __future__ import annotations

import io
import re
from xml.sax.saxutils import escape

import numpy as np
from pdf2image import convert_from_bytes, pdfinfo_from_bytes
from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_LEFT, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate

from pipeline.render.config import RenderConfig

ALIGN = {"LEFT": TA_LEFT, "CENTER": TA_CENTER, "RIGHT": TA_RIGHT, "JUSTIFY": TA_JUSTIFY}
CJK = re.compile(r"[\u4E00-\u9FFF]")


def render_reference(text: str, cfg: RenderConfig) -> list[bytes]:
    """Glyph's pages for `text` as PNG bytes."""
    font_name = "ref_" + re.sub(r"\W", "_", cfg.font_path)
    if font_name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(font_name, cfg.font_path))
    style = ParagraphStyle(
        name="Custom", parent=getSampleStyleSheet()["Normal"], fontName=font_name, fontSize=cfg.font_size,
        leading=cfg.line_height, textColor=colors.HexColor(cfg.font_color),
        backColor=colors.HexColor(cfg.para_bg_color), borderColor=colors.HexColor(cfg.para_border_color),
        borderWidth=cfg.border_width, borderPadding=cfg.border_padding, firstLineIndent=cfg.first_line_indent,
        wordWrap="CJK" if CJK.search(text) else None, leftIndent=cfg.left_indent, rightIndent=cfg.right_indent,
        alignment=ALIGN[cfg.alignment], spaceBefore=cfg.space_before, spaceAfter=cfg.space_after,
    )
    processed = re.sub(r" {2,}", lambda m: "&nbsp;" * len(m.group()), escape(text))
    parts = processed.split("\n")
    story = [Paragraph(cfg.newline_markup.join(parts[i:i + 30]), style) for i in range(0, len(parts), 30)]
    width, height = cfg.page_size
    background = colors.HexColor(cfg.page_bg_color)

    def paint_background(canvas, _doc):
        canvas.saveState()
        canvas.setFillColor(background)
        canvas.rect(0, 0, width, height, stroke=0, fill=1)
        canvas.restoreState()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=(width, height), leftMargin=cfg.margin_x, rightMargin=cfg.margin_x,
                            topMargin=cfg.margin_y, bottomMargin=cfg.margin_y)
    doc.build(story, onFirstPage=paint_background, onLaterPages=paint_background)
    pdf = buffer.getvalue()
    total = int(pdfinfo_from_bytes(pdf)["Pages"])
    pages = []
    for first in range(1, total + 1, 20):
        last = min(first + 19, total)
        for number, image in enumerate(convert_from_bytes(pdf, dpi=cfg.dpi, first_page=first, last_page=last),
                                       start=first):
            pages.append(_finish(image, cfg, number == total))
    return pages


def _finish(image, cfg: RenderConfig, is_last: bool) -> bytes:
    w, h = image.size
    if cfg.horizontal_scale != 1.0:
        image = image.resize((int(w * cfg.horizontal_scale), h))
    if cfg.auto_crop_width or (cfg.auto_crop_last_page and is_last):
        gray = np.array(image.convert("L"))
        mask = np.abs(gray.astype(int) - np.median(gray[:2, :2])) > 5
        if cfg.auto_crop_width:
            cols = np.where(mask.any(axis=0))[0]
            if cols.size:
                image = image.crop((0, 0, min(image.width, int(cols[-1]) + 1 + int(cfg.margin_x)), image.height))
        if cfg.auto_crop_last_page and is_last:
            rows = np.where(mask.any(axis=1))[0]
            if rows.size:
                image = image.crop((0, 0, image.width, min(image.height, int(rows[-1]) + int(cfg.margin_y))))
    out = io.BytesIO()
    image.convert("RGB").save(out, "PNG")
    return out.getvalue()
