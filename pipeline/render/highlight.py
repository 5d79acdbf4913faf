"""Syntax highlighting for the code theme: Pygments token colours as spans of the text (which is unchanged).

A light palette (Pygments' `vs`) on light pages and a dark one (`github-dark`) on dark pages, picked by the
config's `syntax-highlighting` ("auto", "light", "dark" or "none"). The lexer comes from the document's file
name (its id, e.g. `src/module.py`); a name Pygments does not know is not highlighted.
"""

from __future__ import annotations

import functools

PALETTES = {"light": "vs", "dark": "github-dark"}


@functools.lru_cache(maxsize=4)
def _token_colors(palette: str) -> dict:
    from pygments.styles import get_style_by_name

    style = get_style_by_name(PALETTES[palette])
    return {token: f"#{spec['color']}" for token, spec in style if spec.get("color")}


def palette_for(mode: str, page_luminance: float) -> str | None:
    """The palette a config asks for ("auto": by the page's background)."""
    if mode == "none":
        return None
    if mode == "auto":
        return "dark" if page_luminance < 0.4 else "light"
    return mode


def color_spans(text: str, name: str | None, palette: str) -> list[tuple[int, int, str]]:
    """(start, end, colour) for every token Pygments colours, in order; [] when the name has no lexer.

    >>> color_spans("x = 1  # one\\n", "a.py", "light")
    [(7, 12, '#008000')]
    """
    from pygments.lexers import get_lexer_for_filename
    from pygments.util import ClassNotFound

    if not name:
        return []
    try:
        lexer = get_lexer_for_filename(name.rsplit("/", 1)[-1], stripnl=False, stripall=False, ensurenl=False,
                                       tabsize=0)
    except ClassNotFound:
        return []
    colors = _token_colors(palette)
    spans, position = [], 0
    for token, value in lexer.get_tokens(text):
        color = None
        while token is not None and color is None:
            color, token = colors.get(token), token.parent
        if color and value.strip():
            if spans and spans[-1][1] == position and spans[-1][2] == color:
                spans[-1] = (spans[-1][0], position + len(value), color)
            else:
                spans.append((position, position + len(value), color))
        position += len(value)
    return spans if position == len(text) else []  # a lexer that changed the text: no highlighting
