"""Renderer: one document's text -> rendered pages with exact targets and token counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.render.backends import get_rasterizer, line_boxes
from pipeline.render.config import RenderConfig
from pipeline.render.fonts import FontChain
from pipeline.render.layout import Paginator
from pipeline.render.normalize import normalize_text
from pipeline.render.png import encode_png
from pipeline.render.tokens import GLM41V, TextTokenizer, VisionTokenRule


@dataclass
class RenderedPage:
    index: int
    text: str  # exactly the characters drawn on this page
    char_start: int
    char_end: int
    pixels: np.ndarray
    lines: list[dict]  # {"box": [x0, y0, x1, y1] in pixels, "start", "end": characters of the document's text}
    missing_glyphs: int
    missing_chars: list[str]
    text_tokens: int
    visual_tokens: int
    legibility: dict = field(default_factory=dict)  # px_per_em, contrast, gutter (see Renderer.legibility)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def png(self) -> bytes:
        return encode_png(self.pixels)

    def metadata(self) -> dict:
        return {
            "page": self.index,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "text_tokens": self.text_tokens,
            "visual_tokens": self.visual_tokens,
            "compression_ratio": round(self.text_tokens / self.visual_tokens, 4) if self.visual_tokens else 0.0,
            "missing_glyphs": self.missing_glyphs,
            "missing_chars": self.missing_chars,
            "width": self.width,
            "height": self.height,
            "lines": self.lines,
            **self.legibility,
        }


@dataclass
class RenderedDocument:
    text: str  # the normalized text; pages join back to it
    pages: list[RenderedPage] = field(default_factory=list)
    text_tokens: int = 0

    @property
    def visual_tokens(self) -> int:
        return sum(page.visual_tokens for page in self.pages)

    @property
    def compression_ratio(self) -> float:
        return self.text_tokens / self.visual_tokens if self.visual_tokens else 0.0


class Renderer:
    """Holds what is costly to build (fonts, tokenizer, backend) for many documents."""

    def __init__(self, cfg: RenderConfig, backend: str = "skia", tokenizer: str | TextTokenizer | None = None,
                 vision: VisionTokenRule = GLM41V):
        self.cfg = cfg
        self.chain = FontChain.from_paths(cfg.font_chain)
        self.paginator = Paginator(cfg, self.chain)
        self.rasterizer = get_rasterizer(backend)
        self.tokenizer = tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer(
            *(tokenizer,) if tokenizer else ())
        self.vision = vision

    @property
    def legibility(self) -> dict:
        """What lets training see or filter how readable a page is: effective pixels per em (after the
        horizontal squeeze), the text's WCAG contrast on its background, and whether a line-number gutter is
        drawn (its numbers are never part of the page's target text)."""
        cfg = self.cfg
        return {"px_per_em": round(cfg.px_per_em, 2), "contrast": round(cfg.contrast, 2),
                "gutter": {"line_numbers": cfg.line_numbers, "in_target": False}}

    def render(self, raw_text: str, normalized: bool = False, name: str | None = None) -> RenderedDocument:
        """Render a whole document, all pages in memory; `name` (a file name) picks a syntax highlighter."""
        text = raw_text if normalized else normalize_text(raw_text)
        return RenderedDocument(text=text, pages=list(self.iter_pages(text, name=name)),
                                text_tokens=self.tokenizer.count(text))

    def layout(self, text: str, name: str | None = None):
        """Page layouts of an already normalized text (pure logic; no pixels yet)."""
        from pipeline.render.highlight import color_spans, palette_for

        palette = palette_for(self.cfg.syntax_highlighting, self.cfg.page_luminance)
        return self.paginator.paginate(text, color_spans(text, name, palette) if palette else None)

    def iter_pages(self, text: str, layouts=None, name: str | None = None):
        """Yield the pages of an already normalized text one at a time (bounded memory)."""
        layouts = self.layout(text, name) if layouts is None else layouts
        for layout, pixels in zip(layouts, self.rasterizer.rasterize(self.cfg, self.chain, layouts)):
            page_text = text[layout.start:layout.end]
            height, width = pixels.shape[:2]
            yield RenderedPage(
                index=layout.index,
                text=page_text,
                char_start=layout.start,
                char_end=layout.end,
                pixels=pixels,
                lines=line_boxes(self.cfg, layout),
                missing_glyphs=layout.missing_glyphs,
                missing_chars=sorted(layout.missing_chars)[:32],
                text_tokens=self.tokenizer.count(page_text),
                visual_tokens=self.vision.tokens(width, height),
                legibility=self.legibility,
            )


def render_document(text: str, cfg: RenderConfig | None = None, backend: str = "skia") -> RenderedDocument:
    return Renderer(cfg or RenderConfig(), backend).render(text)
