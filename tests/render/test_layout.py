"""The exact-target invariant: pages join back to the normalized text, whatever the text."""

import pytest
from hypothesis import given, strategies as st

from pipeline.render.config import RenderConfig
from pipeline.render.layout import Paginator
from pipeline.render.normalize import normalize_text
from pipeline.render.styles import load_style

HOSTILE = [
    "",
    "\n",
    "\n\n\n",
    "\t\tindented\twith\ttabs\n    four spaces\n",
    "trailing spaces   \n   \nblank above",
    "<b>bold?</b> &amp; &lt;br/&gt; <br/> <font color='red'>x</font>",
    "\u05e9\u05dc\u05d5\u05dd \u0627\u0644\u0633\u0644\u0627\u0645 mixed RTL",
    "emoji \U0001F600\U0001F469\u200d\U0001F4BB flags \U0001F1EB\U0001F1F7",
    "combining e\u0301 a\u0308 \u0915\u094d\u0937 Z\u0351\u0352\u0353",
    "x" * 120_000,
    "word " * 5000,
    "中文测试，没有空格的长句子。" * 400,
    "\ue000\ue001 private use",
]

CONFIGS = {
    "best-en": load_style("best-en"),
    "justify-narrow": RenderConfig(page_size=(200, 260), margin_x=10, margin_y=10, alignment="JUSTIFY",
                                   first_line_indent=12, space_before=3, space_after=5),
    "right": RenderConfig(alignment="RIGHT", page_size=(300, 400)),
    "code-numbered": load_style("code").replace(line_numbers=True),
    "marker": RenderConfig(newline_markup='<font color="#FF0000"> \\n </font>', page_size=(300, 300)),
    "hanging": RenderConfig(left_indent=20, first_line_indent=-20, alignment="CENTER", page_size=(250, 300)),
}


def check_invariants(text: str, pages) -> None:
    assert "".join(text[p.start:p.end] for p in pages) == text
    assert pages[0].start == 0 and pages[-1].end == len(text)
    for previous, page in zip(pages, pages[1:]):
        assert previous.end == page.start
    for page in pages:
        cursor = page.start
        assert page.lines, "every page holds at least one line"
        for line in page.lines:
            assert line.start == cursor and line.end >= line.start
            cursor = line.end
        assert cursor == page.end


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("raw", HOSTILE, ids=lambda t: repr(t[:16]))
def test_hostile_inputs_join_back_exactly(name, raw):
    text = normalize_text(raw)
    check_invariants(text, Paginator(CONFIGS[name]).paginate(text))


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=3000),
       st.sampled_from(sorted(CONFIGS)))
def test_any_text_joins_back_exactly(raw, name):
    text = normalize_text(raw)
    check_invariants(text, Paginator(CONFIGS[name]).paginate(text))


@given(st.lists(st.sampled_from(["alpha", "beta", " ", "  ", "\t", "\n", "\n\n", "長", "x" * 300]), max_size=400))
def test_structured_text_joins_back_and_lines_fit(parts):
    cfg = CONFIGS["justify-narrow"]
    text = "".join(parts)
    pages = Paginator(cfg).paginate(text)
    check_invariants(text, pages)
    right_edge = cfg.text_left + cfg.text_width + 1e-6
    for page in pages:
        for line in page.lines:
            assert line.x1 <= right_edge, "visible content never crosses the right margin"


def test_long_word_wraps_by_character():
    cfg = CONFIGS["best-en"]
    text = "x" * 120_000
    pages = Paginator(cfg).paginate(text)
    lines = [line for page in pages for line in page.lines]
    assert len(lines) > 100
    widths = {line.end - line.start for line in lines[:-1]}
    assert len(widths) == 1, "every full line holds the same number of x"
    assert all(line.x1 <= cfg.text_left + cfg.text_width + 1e-6 for line in lines)


def test_wrap_spaces_stay_on_the_line_they_end():
    cfg = RenderConfig(page_size=(120, 200), margin_x=5, margin_y=5)
    text = "aaaa bbbb    cccc dddd eeee"
    lines = Paginator(cfg).paginate(text)[0].lines
    pieces = [text[line.start:line.end] for line in lines]
    assert "".join(pieces) == text
    assert all(not piece.startswith(" ") for piece in pieces[1:])


def test_tabs_and_space_runs_are_kept_and_advance_the_pen():
    cfg = load_style("code")
    text = "\tx\n    x\n\t\tx"
    pages = Paginator(cfg).paginate(text)
    lines = pages[0].lines
    assert [text[ln.start:ln.end] for ln in lines] == ["\tx\n", "    x\n", "\t\tx"]
    advance = 0.6020 * cfg.font_size  # DejaVu Sans Mono: every glyph is 1233/2048 em wide
    x_of_x = [line.runs[-1].x + line.runs[-1].text.index("x") * advance for line in lines]
    assert x_of_x[0] == pytest.approx(x_of_x[1], abs=0.01)  # one tab = four spaces (tab-size 4)
    assert x_of_x[2] == pytest.approx(x_of_x[0] + 4 * advance, abs=0.01)


def test_page_capacity_matches_glyph_frame():
    cfg = CONFIGS["best-en"]  # 842 - 2 * (10 + 6) = 810 pt of text: 81 lines of 10 pt
    text = "\n".join(f"line {i}" for i in range(200))
    pages = Paginator(cfg).paginate(text)
    assert [len(p.lines) for p in pages] == [81, 81, 38]


def test_fallback_chain_and_missing_glyphs():
    cfg = CONFIGS["best-en"]
    text = "Latin 中文 \ue000\ue000 \U000E0001 end"
    pages = Paginator(cfg).paginate(text)
    runs = [run for line in pages[0].lines for run in line.runs]
    fonts_used = {run.font for run in runs}
    assert 0 in fonts_used and 3 in fonts_used  # DejaVu Sans, then Droid Sans Fallback for the Han
    assert pages[0].missing_glyphs == 2 and pages[0].missing_chars == {"\ue000"}
    assert "\ufffd\ufffd" in "".join(run.text for run in runs), "missing glyphs are drawn visibly as U+FFFD"
    assert "\U000E0001" not in "".join(run.text for run in runs), "invisible format characters draw nothing"


def test_line_numbers_label_source_lines_only():
    cfg = CONFIGS["code-numbered"]
    text = "def f():\n" + "    return " + "1 + " * 200 + "1\n" + "x = 2\n"
    lines = Paginator(cfg).paginate(text)[0].lines
    labels = [line.label.text if line.label else None for line in lines]
    assert labels[0] == "1" and labels[1] == "2" and None in labels and labels[-1] == "3"
    assert "".join(text[ln.start:ln.end] for ln in lines) == text


def test_kinsoku_keeps_closing_punctuation_off_line_starts(sample_docs):
    """The Song poems run together as prose (Debian fortunes-zh): before, 16 of 142 lines began with a comma
    or full stop; now none of 143 does, and the pages still join back to the text."""
    import re

    from pipeline.render.layout import NO_LINE_START, Paginator
    from pipeline.render.normalize import normalize_text
    from pipeline.render.styles import load_style

    text = normalize_text("".join(re.sub(r"\x1b\[[0-9;]*m", "", sample_docs["song100-zh"]).split()))
    pages = Paginator(load_style("best-zh")).paginate(text)
    lines = [line for page in pages for line in page.lines]
    assert len(lines) > 30 and sum(text.count(c) for c in "，。") > 100
    assert [text[line.start] for line in lines if text[line.start] in NO_LINE_START] == []
    assert "".join(text[page.start:page.end] for page in pages) == text
    cfg = load_style("best-zh")
    widths = [line.x1 - line.x0 for line in lines[:-1]]
    assert max(widths) <= cfg.text_width + 1e-6, "a carried character never pushes a line past the margin"
