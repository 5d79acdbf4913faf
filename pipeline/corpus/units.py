"""Splitting documents into render units. Pure logic: text in, spans out.

A unit is the text of one training sample. Documents longer than the budget
are cut at paragraph boundaries, falling back to line, then character
boundaries; the units' spans cover the document exactly, in order.
"""

from __future__ import annotations

import re

_PARAGRAPH_END = re.compile(r"\n\n+")


def cut_point(text: str, start: int, max_chars: int) -> int:
    """Where the unit starting at `start` ends: the latest good boundary within the budget.

    >>> text = "one two\\n\\nthree four\\nfive six"
    >>> cut_point(text, 0, 14)  # paragraph boundary: the blank line stays with the first unit
    9
    >>> cut_point(text, 9, 14)  # no paragraph end in reach: a line boundary
    20
    >>> cut_point("abcdefgh", 0, 3)  # no boundary at all: characters
    3
    """
    limit = start + max_chars
    if limit >= len(text):
        return len(text)
    window = text[start:limit]
    paragraph = None
    for match in _PARAGRAPH_END.finditer(window):
        paragraph = match.end()
    if paragraph:
        return start + paragraph
    line = window.rfind("\n")
    if line >= 0:
        return start + line + 1
    return limit


def split_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Contiguous spans covering `text`, each at most max_chars long.

    >>> split_spans("aaaa\\n\\nbbbb\\ncc", 7)
    [(0, 6), (6, 13)]
    >>> split_spans("abcdefgh", 3)
    [(0, 3), (3, 6), (6, 8)]
    """
    if max_chars < 1:
        raise ValueError(f"max-chars: must be >= 1, got {max_chars}")
    spans, start = [], 0
    while start < len(text):
        end = cut_point(text, start, max_chars)
        spans.append((start, end))
        start = end
    return spans
