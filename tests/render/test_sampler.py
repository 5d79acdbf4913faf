from collections import Counter

import pytest

from pipeline.render.config import RenderConfig
from pipeline.render.sampler import DPI_SET, FONT_SIZES, StyleSampler


def test_same_seed_same_config_and_different_keys_differ():
    a, b = StyleSampler(7), StyleSampler(7)
    assert a.sample("doc-1") == b.sample("doc-1")
    assert a.sample("doc-1") != a.sample("doc-2") or a.sample("doc-3") != a.sample("doc-4")
    assert StyleSampler(8).sample("doc-1") != a.sample("doc-1") or StyleSampler(9).sample("doc-1") != a.sample("doc-1")


def test_samples_are_valid_and_cover_the_paper_ranges():
    configs = [StyleSampler(3).sample(i) for i in range(400)]
    assert all(isinstance(c, RenderConfig) for c in configs)  # validated on construction
    assert {c.font_size for c in configs} <= set(FONT_SIZES)
    assert all(0 <= c.line_height - c.font_size <= 3 for c in configs)
    assert all(10 <= c.margin_x <= 40 and 10 <= c.margin_y <= 40 for c in configs)
    assert all(0.75 <= c.horizontal_scale <= 1.0 for c in configs)
    dpis = [c.dpi for c in configs]
    assert min(dpis) >= 45 and any(d > 300 for d in dpis) and any(d in DPI_SET for d in dpis)
    medium = sum(72 <= d <= 150 for d in dpis)
    assert medium > len(dpis) / 2, "medium dpi values are favoured"
    alignments = Counter(c.alignment for c in configs)
    assert alignments["LEFT"] + alignments["JUSTIFY"] > 0.8 * len(configs)
    assert alignments["RIGHT"] > 0 and alignments["CENTER"] > 0
    assert any(c.first_line_indent < 0 for c in configs) and any(c.first_line_indent > 0 for c in configs)
    assert any(not c.is_gray or c.page_bg_color != "#FFFFFF" for c in configs)
    assert any(c.newline_markup != "<br/>" for c in configs)
    families = Counter(c.style.rsplit("-", 1)[1] for c in configs)
    assert set(families) == {"serif", "sans", "mono"}
    assert any("dark" in c.style for c in configs)


def test_a_legibility_floor_redraws_small_text():
    from pipeline.render.sampler import StyleSampler

    unfloored = [StyleSampler(3).sample(f"doc-{i}").px_per_em for i in range(200)]
    assert min(unfloored) < 8, "the sampler does draw small text (as Glyph trains on it)"
    floored = [StyleSampler(3, min_px_per_em=8).sample(f"doc-{i}").px_per_em for i in range(200)]
    assert min(floored) >= 8


def test_a_named_style_below_the_floor_is_refused():
    from pipeline.render.config import RenderConfigError
    from pipeline.render.styles import StyleMixture

    with pytest.raises(RenderConfigError, match="min-px-per-em: style 'best-en' draws 9.0 px per em"):
        StyleMixture({"best-en": 1.0}, min_px_per_em=12)


def test_the_sampler_draws_a_family_made_for_the_documents_script():
    from babel import Locale

    from pipeline.render.sampler import StyleSampler

    arabic = " ".join(Locale.parse("ar").territories.values())
    thai = " ".join(Locale.parse("th").territories.values())
    fonts_for = {name: {StyleSampler(5).sample(f"d{i}", text).font_path.rsplit("/", 1)[-1] for i in range(30)}
                 for name, text in (("ar", arabic), ("th", thai), ("en", "Plain English prose."))}
    assert fonts_for["ar"] <= {"NotoNaskhArabic-Regular.ttf", "NotoSansArabic-Regular.ttf"}
    assert fonts_for["th"] == {"NotoSansThai-Regular.ttf"}
    assert fonts_for["en"] <= {"DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"}
    assert StyleSampler(5).sample("d1", "Plain English prose.") == StyleSampler(5).sample("d1"), \
        "Latin text draws what it drew before"
