"""Complex scripts: grapheme clusters, a font per cluster run, HarfBuzz shaping, the bidirectional algorithm.

Pure logic beside the layout. A document with none of what needs it (joining
or reordering scripts, Indic and Southeast Asian scripts, combining marks,
emoji sequences, bidi controls) never comes here: the layout keeps its
per-character fast path. Otherwise words are measured by shaping them with
HarfBuzz in the font chosen for each grapheme cluster (the first font of the
chain that has every character of the cluster, the colour emoji font first for
emoji), lines are broken in logical order at cluster boundaries, and each line
is reordered for display by the Unicode bidirectional algorithm (UAX #9, levels
from python-bidi, rule L2 here), then shaped piece by piece: a piece is a run
of one font at one embedding level, shaped in that level's direction.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import regex

from pipeline.render.fonts import FontChain

COMPLEX = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0590-\u08ff\u0900-\u0dff\u0e00-\u0fff\u1000-\u109f\u1100-\u11ff"
    "\u1780-\u18af\u1a00-\u1aff\u1b00-\u1bff\u200c-\u200f\u202a-\u202e\u2066-\u2069\u20d0-\u20ff"
    "\ua8e0-\ua8ff\ufb1d-\ufdff\ufe00-\ufe0f\ufe20-\ufe2f\ufe70-\ufeff"
    "\U00010800-\U00010fff\U0001e800-\U0001efff\U0001f000-\U0001faff\U000e0000-\U000e007f]")
EMOJI = re.compile("[\u2600-\u27bf\ufe0f\U0001f000-\U0001faff]")
GRAPHEME = regex.compile(r"\X")
IGNORABLE = frozenset({"Cf", "Mn", "Me"})  # a font lacking these can still draw the cluster (HarfBuzz)


def needs_shaping(text: str) -> bool:
    """Whether any character needs shaping, reordering or cluster-aware breaking."""
    return COMPLEX.search(text) is not None


def cluster_bounds(text: str, start: int = 0, end: int | None = None) -> list[int]:
    """Offsets where extended grapheme clusters of text[start:end] begin, and `end`: never cut between."""
    end = len(text) if end is None else end
    bounds = [m.start() for m in GRAPHEME.finditer(text, start, end)]
    return [*bounds, end] if bounds else [start, end]


@dataclass
class Shaped:
    glyphs: list[int]
    advances: list[float]  # pt
    offsets: list[tuple[float, float]]  # pt, y down
    clusters: list[int]  # the character (index into the shaped text) each glyph belongs to
    width: float


class Shaper:
    """HarfBuzz fonts for a font chain at one size; shaped widths cached per (text, font, direction)."""

    def __init__(self, chain: FontChain, size: float):
        self.chain, self.size = chain, size
        self._emoji = next((i for i, path in enumerate(chain.paths) if "emoji" in path.lower()), None)
        self._widths: dict[tuple[str, bool | None], float] = {}

    def font_for(self, cluster: str) -> int:
        """The chain's font for one grapheme cluster (-2: none has it: drawn with the replacement glyph)."""
        if self._emoji is not None and EMOJI.search(cluster) and self.chain.faces[self._emoji].has(cluster[0]):
            return self._emoji
        needed = [c for c in cluster if unicodedata.category(c) not in IGNORABLE] or list(cluster[:1])
        for index, face in enumerate(self.chain.faces):
            if all(face.has(c) for c in needed):
                return index
        font = self.chain.lookup(cluster[0])[0]
        return font if font >= 0 else self.chain.replacement_font()

    def font_runs(self, text: str, start: int, end: int) -> list[tuple[int, int, int]]:
        """(start, end, font) runs of text[start:end], split only between grapheme clusters."""
        runs: list[tuple[int, int, int]] = []
        bounds = cluster_bounds(text, start, end)
        for left, right in zip(bounds, bounds[1:]):
            font = self.font_for(text[left:right])
            if runs and runs[-1][2] == font:
                runs[-1] = (runs[-1][0], right, font)
            else:
                runs.append((left, right, font))
        return runs

    def shape(self, text: str, font: int, rtl: bool | None = None) -> Shaped:
        import uharfbuzz as hb

        hb_font, upem = _hb_font(str(self.chain.faces[font].path))
        buffer = hb.Buffer()
        buffer.add_str(text)
        buffer.guess_segment_properties()
        if rtl is not None:
            buffer.direction = "rtl" if rtl else "ltr"
        hb.shape(hb_font, buffer, {"kern": False, "liga": False})  # as reportlab draws Latin: no kerning
        scale = self.size / upem
        infos, positions = buffer.glyph_infos, buffer.glyph_positions
        advances = [p.x_advance * scale for p in positions]
        return Shaped([i.codepoint for i in infos], advances,
                      [(p.x_offset * scale, -p.y_offset * scale) for p in positions],
                      [i.cluster for i in infos], sum(advances))

    def width(self, text: str, rtl: bool | None = None) -> float:
        """Shaped width of text (its font runs shaped one by one)."""
        key = (text, rtl)
        width = self._widths.get(key)
        if width is None:
            width = sum(self.shape(text[a:b], font, rtl).width for a, b, font in self.font_runs(text, 0, len(text)))
            if len(text) < 64:
                self._widths[key] = width
        return width


@functools.lru_cache(maxsize=64)
def _hb_font(path: str):
    import uharfbuzz as hb

    face = hb.Face(hb.Blob.from_file_path(path), 0)
    return hb.Font(face), face.upem


def bidi_levels(text: str) -> tuple[int, list[int]]:
    """The paragraph's base level (0 LTR, 1 RTL, from its first strong character) and each character's
    embedding level (UAX #9 through rule I2)."""
    from bidi import algorithm as uax9

    if not text:
        return 0, []
    # Characters this Python's Unicode database does not know have no bidi class, and python-bidi's
    # algorithm predates the isolates (UAX #9 6.3): it would stop on either. Unknown characters are neutral
    # (ON) for it, isolates the embeddings they extend; every index is kept.
    text = "".join(ISOLATES.get(ch, ch) if unicodedata.bidirectional(ch) else "!" for ch in text)
    try:
        return _uax9_levels(uax9, text)
    except (AssertionError, IndexError, KeyError):  # its limits (for example embeddings past depth 61)
        base = uax9.get_base_level(text, False)
        return base, [_strong_level(ch, base) for ch in text]


ISOLATES = {"\u2066": "\u202a", "\u2067": "\u202b", "\u2068": "\u202b", "\u2069": "\u202c"}  # LRI RLI FSI PDI


def _strong_level(ch: str, base: int) -> int:
    kind = unicodedata.bidirectional(ch)
    if kind in ("R", "AL"):
        return base if base % 2 else base + 1
    if kind in ("L", "EN", "AN") and base % 2:
        return base + 1
    return base


def _uax9_levels(uax9, text: str) -> tuple[int, list[int]]:
    storage = uax9.get_empty_storage()
    base = uax9.get_base_level(text, False)
    storage["base_level"], storage["base_dir"] = base, ("L", "R")[base]
    uax9.get_embedding_levels(text, storage, False, False)
    uax9.explicit_embed_and_overrides(storage, False)
    uax9.resolve_weak_types(storage, False)
    uax9.resolve_neutral_types(storage, False)
    uax9.resolve_implicit_levels(storage, False)
    levels, chars = [], iter(storage["chars"])
    pending = next(chars, None)
    for ch in text:  # X9 removes embedding controls from the list: they take their neighbour's level
        if pending is not None and pending["ch"] == ch:
            levels.append(pending["level"])
            pending = next(chars, None)
        else:
            levels.append(levels[-1] if levels else base)
    return base, levels


def visual_order(levels: list[int]) -> list[int]:
    """Rule L2: indexes of items (runs at the given levels) in display order, left to right."""
    order = list(range(len(levels)))
    if not levels:
        return order
    highest, lowest_odd = max(levels), min((lv for lv in levels if lv % 2), default=None)
    if lowest_odd is None:
        return order
    for level in range(highest, lowest_odd - 1, -1):
        index = 0
        while index < len(order):
            if levels[order[index]] >= level:
                end = index
                while end < len(order) and levels[order[end]] >= level:
                    end += 1
                order[index:end] = reversed(order[index:end])
                index = end
            else:
                index += 1
    return order
