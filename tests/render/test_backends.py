"""Both backends draw the same layout: same page breaks, same texts, near-identical pixels."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from pipeline.render.config import RenderConfig
from pipeline.render.document import Renderer
from pipeline.render.styles import load_style


@pytest.fixture(scope="module")
def prose(sample_docs):
    return sample_docs["milton-areopagitica"][:12000]


@pytest.mark.parametrize("style", ["best-en", "document", "dark", "web"])
def test_same_breaks_and_texts_on_both_backends(style, prose):
    cfg = load_style(style)
    fast, pdf = Renderer(cfg, "skia").render(prose), Renderer(cfg, "pdf").render(prose)
    assert len(fast.pages) == len(pdf.pages) > 1
    for a, b in zip(fast.pages, pdf.pages):
        assert (a.text, a.char_start, a.char_end, a.lines) == (b.text, b.char_start, b.char_end, b.lines)
        assert a.pixels.shape == b.pixels.shape
        diff = np.abs(a.pixels.astype(int) - b.pixels.astype(int))
        # Only antialiasing differs: ink lands in the same places.
        assert diff.mean() < 16, f"page {a.index}: mean pixel difference {diff.mean():.1f}"
    assert "".join(p.text for p in fast.pages) == fast.text


def test_gray_palette_gives_8bit_gray_and_colour_gives_rgb(prose):
    gray = Renderer(load_style("dark"), "skia").render(prose[:2000]).pages[0]
    assert gray.pixels.ndim == 2 and gray.pixels.dtype == np.uint8
    assert Image.open(io.BytesIO(gray.png())).mode == "L"
    assert np.median(gray.pixels) < 64, "dark style: dark page"
    colour = Renderer(load_style("web"), "skia").render(prose[:2000]).pages[0]
    assert colour.pixels.ndim == 3 and Image.open(io.BytesIO(colour.png())).mode == "RGB"


def test_png_round_trips(prose):
    page = Renderer(load_style("best-en")).render(prose[:3000]).pages[0]
    decoded = np.asarray(Image.open(io.BytesIO(page.png())))
    assert np.array_equal(decoded, page.pixels)


def test_horizontal_scale_and_auto_crop(prose):
    base = RenderConfig(margin_x=10, margin_y=10)
    full = Renderer(base).render(prose[:2000]).pages
    squeezed = Renderer(base.replace(horizontal_scale=0.75)).render(prose[:2000]).pages
    assert squeezed[0].width == int(595 * 0.75) and squeezed[0].text == full[0].text
    cropped = Renderer(base.replace(auto_crop_width=True, auto_crop_last_page=True)).render("short line").pages
    assert cropped[0].width < 300 and cropped[0].height < 60
    assert cropped[0].visual_tokens < full[0].visual_tokens


def test_newline_marker_draws_red_and_keeps_newlines(prose):
    cfg = RenderConfig(newline_markup='<font color="#FF0000"> \\n </font>')
    doc = Renderer(cfg).render("first\nsecond\n\nthird")
    page = doc.pages[0]
    assert page.text == "first\nsecond\n\nthird" and len(page.lines) == 1
    assert page.pixels.ndim == 3
    red = page.pixels[..., 0].astype(int) - page.pixels[..., 1] > 60
    assert red.sum() > 10


def test_legibility_tesseract_reads_the_page(prose):
    """Tesseract's character error rate on a page at a legible config is under 2%.

    10 pt DejaVu Sans at 96 dpi is a common screen-reading size; on it tesseract
    measured 0.4% (skia) and 0.3% (pdf) here. 2% leaves room for other tesseract
    versions, while misplaced or overlapping glyphs push the rate past 10%.
    """
    import pytesseract
    from rapidfuzz.distance import Levenshtein

    cfg = RenderConfig(page_size=(420, 300), dpi=96, font_size=10, line_height=12, alignment="LEFT")
    page = Renderer(cfg, "skia").render(prose[3000:5000]).pages[0]
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    ocr = pytesseract.image_to_string(Image.fromarray(page.pixels), config="--psm 6")
    squash = lambda s: " ".join(s.split())  # noqa: E731 - line breaks differ by design
    cer = Levenshtein.normalized_distance(squash(ocr), squash(page.text))
    assert len(page.text) > 500
    assert cer < 0.02, f"CER {cer:.3%}\nOCR: {ocr[:300]}\nTRUTH: {page.text[:300]}"


def _ink(pixels: np.ndarray) -> float:
    """How far the page's pixels are from its background, summed: the ink a reader sees."""
    values = pixels.astype(np.float64)
    if values.ndim == 3:
        values = values.mean(axis=2)
    return float(np.abs(values - np.median(values)).sum())


@pytest.mark.parametrize("dpi", [45, 96, 300])
@pytest.mark.parametrize("palette", [("#000000", "#FFFFFF"), ("#E0E0E0", "#1E1E1E")], ids=["light", "dark"])
def test_ink_is_within_five_percent_of_poppler(prose, dpi, palette):
    """The default backend against reportlab + poppler (Glyph's path), same layout: Skia's glyph masks alone
    gave 0.70-0.92x the ink of black text and up to 1.8x of light text on dark pages."""
    text, background = palette
    cfg = RenderConfig.from_glyph_dict({"dpi": dpi, "font-color": text, "page-bg-color": background,
                                        "para-bg-color": background, "para-border-color": background})
    skia_page = Renderer(cfg, "skia").render(prose[:4000]).pages[0].pixels
    poppler_page = Renderer(cfg, "pdf").render(prose[:4000]).pages[0].pixels
    assert skia_page.shape == poppler_page.shape
    assert _ink(skia_page) / _ink(poppler_page) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("backend", ["skia", "pdf"])
def test_auto_crop_keeps_paragraph_backgrounds_and_borders_whole(backend):
    """A short line in a shaded, bordered box: the crop keeps the whole box, as Glyph's pixel scan does."""
    cfg = RenderConfig(margin_x=10, margin_y=10, para_bg_color="#E8E8F0", para_border_color="#303030",
                       border_width=1.5, border_padding=4, auto_crop_width=True, auto_crop_last_page=True)
    page = Renderer(cfg, backend).render("A short line in a box.").pages[0]
    box_right = (cfg.text_left + cfg.text_width + cfg.border_padding + cfg.border_width / 2) * cfg.scale
    assert page.width >= box_right + cfg.margin_x * cfg.scale - 1
    gray = page.pixels.astype(int) if page.pixels.ndim == 2 else page.pixels.mean(axis=2)
    right_edge = gray[:, int(box_right) - 2:int(box_right) + 1]
    assert (right_edge < 100).any(), "the box's right border is on the page"
    plain = Renderer(cfg.replace(para_bg_color="#FFFFFF", border_width=0), backend).render("A short line.").pages[0]
    assert plain.width < 200, "with no visible box, the crop still follows the text"


def test_page_metadata_says_how_legible_it_is():
    cfg = RenderConfig(dpi=96, font_size=9, horizontal_scale=0.8, font_color="#222222", line_numbers=True)
    meta = Renderer(cfg).render("one\ntwo").pages[0].metadata()
    assert meta["px_per_em"] == round(9 * 96 / 72 * 0.8, 2)
    assert meta["contrast"] == pytest.approx(15.9, abs=0.1)  # #222222 on white, WCAG
    assert meta["gutter"] == {"line_numbers": True, "in_target": False}
    assert Renderer(RenderConfig()).render("x").pages[0].metadata()["gutter"]["line_numbers"] is False


@pytest.mark.parametrize("background,palette", [("#FFFFFF", "light"), ("#1E1E1E", "dark")])
@pytest.mark.parametrize("backend", ["skia", "pdf"])
def test_code_theme_highlights_syntax_and_keeps_the_text(sample_docs, background, palette, backend):
    from pipeline.render.highlight import color_spans

    source = sample_docs["cpython-textwrap.py"][:2500]  # the module's start: its docstring, imports, a class
    cfg = load_style("code").replace(page_bg_color=background, para_bg_color=background,
                                     font_color="#1F2328" if palette == "light" else "#D4D4D4")
    doc = Renderer(cfg, backend).render(source, name="textwrap.py")
    assert "".join(page.text for page in doc.pages) == doc.text, "the target text is unchanged"
    pixels = doc.pages[0].pixels.astype(int)
    assert pixels.ndim == 3
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    assert (spread > 80).sum() > 200, "coloured tokens on the page"
    colors = {color for _, _, color in color_spans(doc.text, "textwrap.py", palette)}
    assert len(colors) >= 3
    plain = Renderer(cfg, backend).render(source, name="notes.unknown-extension").pages[0].pixels.astype(int)
    assert ((plain.max(axis=2) - plain.min(axis=2)) > 80).sum() < 20, "no lexer, no colours"
