from hypothesis import given, strategies as st

from pipeline.corpus.sources import normalize_stream
from pipeline.corpus.units import split_spans
from pipeline.render.normalize import normalize_text

PIECES = st.sampled_from(["word ", "\n", "\n\n", "\r", "\r\n", "e", "\u0301", "\u00ad", "長", "x" * 50, "\t"])


@given(st.lists(PIECES, max_size=300), st.integers(min_value=1, max_value=120))
def test_spans_cover_the_text_within_budget(parts, budget):
    text = "".join(parts)
    spans = split_spans(text, budget)
    assert "".join(text[s:e] for s, e in spans) == text
    assert all(0 < e - s <= budget for s, e in spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_cuts_prefer_paragraphs_then_lines_then_characters():
    text = "para one line\nstill one\n\npara two\nline two\nline three"
    assert [text[s:e] for s, e in split_spans(text, 20)] == [
        "para one line\n", "still one\n\n", "para two\nline two\n", "line three"]
    assert [text[s:e] for s, e in split_spans(text, 30)] == [
        "para one line\nstill one\n\n", "para two\nline two\nline three"]
    assert split_spans("abcdefghij", 4) == [(0, 4), (4, 8), (8, 10)]


@given(st.lists(PIECES, max_size=200), st.lists(st.integers(min_value=0, max_value=400), max_size=8),
       st.integers(min_value=1, max_value=64))
def test_streamed_normalization_equals_whole(parts, cuts, carry):
    text = "".join(parts)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    assert "".join(normalize_stream(pieces, max_carry=carry)) == normalize_text(text)
