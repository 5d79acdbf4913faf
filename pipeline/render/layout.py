"""Layout and pagination: (normalized text, RenderConfig) -> pages of placed lines.

Pure logic, no pixels and no I/O. Every character of the text belongs to
exactly one line and every line to exactly one page, so the page texts join
back to the text. Both backends draw the runs exactly where they are placed
here, so they break lines and pages identically.

Breaking follows Glyph's renderer: a newline is a forced line break
(`newline-markup` "<br/>") or a visible inline marker; lines wrap at spaces,
between CJK characters, and inside a word only when the word is wider than the
line. Spaces at a wrap point stay at the end of the line they follow and are
not drawn; every other space, tab and blank line is kept.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field

from pipeline.render.config import BREAK_NEWLINE, RenderConfig, parse_color, parse_newline_markup
from pipeline.render.fonts import REPLACEMENT, FontChain
from pipeline.render.shaping import COMPLEX, Shaper, bidi_levels, cluster_bounds, needs_shaping, visual_order

_CJK = (
    "\u1100-\u11ff\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3200-\u9fff"
    "\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff"
)
# Kinsoku: closing punctuation, small kana and iteration marks never start a line (JIS X 4051, GB/T 15834).
NO_LINE_START = frozenset("，。、．：；！？）」』】〕〉》〗〙〛〞”’…‥ー々〻ゝゞヽヾぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ"
                          "）］｝｠｣、。，．：；！？")
# One group per token kind; match.lastindex tells which matched.
_TOKEN = re.compile(rf"( +)|(\t)|(\n)|([{_CJK}]|[^ \t\n{_CJK}]+)")
_SPACE, _TAB, _NEWLINE, _WORD = 1, 2, 3, 4


@dataclass
class Run:
    """Characters drawn with one font (index into the chain), starting at x (pt).

    Each glyph advances by its font's own advance width, exactly as measured here.
    """

    font: int
    text: str
    x: float
    color: str | None = None  # None: the config's font colour
    glyphs: list[int] | None = None  # shaped: HarfBuzz's glyph ids, in display order...
    offsets: list[tuple[float, float]] | None = None  # ...and each one's position from x (pt, y down)


@dataclass
class Line:
    start: int  # span in the normalized text, [start, end)
    end: int
    top: float  # pt from the top of the page
    x0: float  # drawn extent, pt from the left of the page
    x1: float
    runs: list[Run] = field(default_factory=list)
    label: Run | None = None  # the source line number in the gutter (not part of the text)

    def drawn_runs(self) -> list[Run]:
        return self.runs if self.label is None else [self.label, *self.runs]


@dataclass
class Block:
    """The part of one paragraph on one page: where its background and border go."""

    top: float
    bottom: float


@dataclass
class PageLayout:
    index: int
    start: int
    end: int
    lines: list[Line] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    missing_glyphs: int = 0
    missing_chars: set[str] = field(default_factory=set)


# A token is a tuple (kind, start, end, width in pt); tabs get their width when placed.
_Token = tuple


class _Measure:
    """Character and token widths in points, cached per document."""

    def __init__(self, chain: FontChain, cfg: RenderConfig, marker: str | None):
        self.chain, self.size = chain, cfg.font_size
        self._char: dict[str, float] = {}
        self._word: dict[str, float] = {}
        self._font: dict[str, int | None] = {}
        self.space = self.char(" ")
        self.tab_stop = self.space * cfg.tab_size
        self.marker = sum(self.char(c) for c in marker) if marker else 0.0
        self.shaper: Shaper | None = None  # set for a document that needs shaping

    def trim(self, limit: int = 500_000) -> None:
        if len(self._word) > limit:
            self._word.clear()
            self._font.clear()

    def char(self, ch: str) -> float:
        width = self._char.get(ch)
        if width is None:
            width = self._char[ch] = self.chain.lookup(ch)[1] * self.size
        return width

    def font_of(self, text: str) -> int | None:
        """The one font that has every character of `text`, or None if it takes several."""
        font = self._font.get(text, -9)
        if font == -9:
            fonts = {self.chain.lookup(ch)[0] for ch in set(text)}
            font = fonts.pop() if len(fonts) == 1 else None
            if font is not None and font < 0:
                font = None
            if len(text) < 64:
                self._font[text] = font
        return font

    def word(self, text: str) -> float:
        width = self._word.get(text)
        if width is None:
            if self.shaper is not None and COMPLEX.search(text):
                return self.shaper.width(text)  # cached by the shaper (a per-document object)
            char = self.char
            width = sum(map(char, text))
            if len(text) < 64:
                self._word[text] = width
        return width


class Paginator:
    """Breaks one document into lines and pages under one config."""

    def __init__(self, cfg: RenderConfig, chain: FontChain | None = None):
        self.cfg = cfg
        self.chain = chain or FontChain.from_paths(cfg.font_chain)
        self.break_newlines = cfg.newline_markup == BREAK_NEWLINE
        self.marker = None if self.break_newlines else parse_newline_markup(cfg.newline_markup)
        self.gutter = 0.0
        # Widths depend only on the config: keep the word cache across documents.
        self.measure = _Measure(self.chain, cfg, self.marker[0] if self.marker else None)

    # -- public -------------------------------------------------------------
    def paginate(self, text: str, colors: list[tuple[int, int, str]] | None = None) -> list[PageLayout]:
        """`colors`: (start, end, colour) spans drawn in that colour (syntax highlighting), in order."""
        self.text = text
        self.color_starts = [span[0] for span in colors] if colors else None
        self.colors = colors
        self.measure.trim()
        if self.cfg.line_numbers:
            digits = len(str(text.count("\n") + 1))
            self.gutter = (digits + 1) * self.measure.char("0")
        lookup = self.chain.lookup
        self.shaper = Shaper(self.chain, self.cfg.font_size) if needs_shaping(text) else None
        self.measure.shaper = self.shaper
        self._bidi: tuple[int, int, list[int]] | None = None  # (hard line start, base level, levels)
        # Most documents need only the primary font: skip per-word font checks then.
        self.single_font = self.shaper is None and not colors and all(lookup(ch)[0] == 0 for ch in set(text) - {"\n", "\t"})
        self.pages: list[PageLayout] = []
        self.line_number = 1
        self._new_page(0)
        for para_start, para_end in self._paragraphs():
            self._lay_paragraph(para_start, para_end)
        self._close_page(len(text))
        for page in self.pages:
            self._count_missing(page)
        return self.pages

    # -- paragraphs ------------------------------------------------------------
    def _paragraphs(self):
        """Spans of paragraphs (runs of non-blank lines) and of single blank lines.

        With a visible newline marker the whole text flows as one paragraph.
        """
        text = self.text
        if not self.break_newlines:
            yield 0, len(text)
            return
        start = 0
        for blank in re.finditer(r"(?<![^\n])\n", text):  # a newline opening a blank line
            if blank.start() > start:
                yield start, blank.start()
            yield blank.start(), blank.end()
            start = blank.end()
        if start < len(text) or not text:
            yield start, len(text)

    def _lay_paragraph(self, start: int, end: int) -> None:
        cfg = self.cfg
        is_blank = self.text[start:end] == "\n"
        block_open = False
        if not is_blank and self.cursor > cfg.text_top + 1e-9:
            self.cursor += cfg.space_before
        first = True
        for hard_start, hard_end, newline in self._hard_lines(start, end):
            if self.shaper is not None:  # each source line is a bidi paragraph
                self._bidi = (hard_start, *bidi_levels(self.text[hard_start:hard_end]))
            number = self.line_number if cfg.line_numbers else None
            self.line_number += 1
            lines = self._wrap(hard_start, hard_end, first and not is_blank)
            for index, (tokens, width, x_offset, last) in enumerate(lines):
                line_end = tokens[-1][2] if tokens else hard_start
                if last and newline:
                    line_end += 1
                if not self._fits():
                    self._close_page(self.pages[-1].lines[-1].end if self.pages[-1].lines else start)
                    self._new_page(self.pages[-1].end)
                    block_open = False
                if not is_blank and not block_open:
                    self.pages[-1].blocks.append(Block(self.cursor, self.cursor))
                    block_open = True
                line = self._place(tokens, width, x_offset, last, line_end)
                if index == 0 and number is not None:
                    line.label = self._label(number)
                self._append(line)
                if block_open:
                    self.pages[-1].blocks[-1].bottom = self.cursor
            first = False
        if not is_blank:
            self.cursor += cfg.space_after

    def _hard_lines(self, start: int, end: int):
        """(start, end, ends_with_newline) for each source line of a paragraph."""
        if not self.break_newlines:
            yield start, end, False
            return
        pos = start
        while pos < end:
            newline = self.text.find("\n", pos, end)
            if newline < 0:
                yield pos, end, False
                return
            yield pos, newline, True
            pos = newline + 1
        if start == end:
            yield start, end, False

    # -- wrapping --------------------------------------------------------------
    def _wrap(self, start: int, end: int, paragraph_start: bool):
        """Greedy line filling of one source line.

        Returns [(tokens, content width, indent, is last line)]. The loop keeps
        its state in locals: it runs once per word of the corpus.
        """
        full = self.cfg.text_width - self.gutter
        indent = self.cfg.first_line_indent if paragraph_start else 0.0
        whole = self._whole_line(start, end, full - indent)
        if whole is not None:
            return [(whole, whole[0][3], indent, True)]
        measure = self.measure
        space, tab_stop, marker, word = measure.space, measure.tab_stop, measure.marker, measure.word
        line = _Line(full - indent, indent)
        out: list = []
        for m in _TOKEN.finditer(self.text, start, end):
            kind = m.lastindex
            s, e = m.span()
            if kind == _SPACE or kind == _TAB:
                width = space * (e - s) if kind == _SPACE else tab_stop - (line.x % tab_stop)
                line.tokens.append((kind, s, e, width))
                line.x += width
                continue
            width = word(m.group()) if kind == _WORD else marker
            token = (kind, s, e, width)
            if line.x + width <= line.avail + 1e-9:  # add_word, inlined: the hottest line
                line.tokens.append(token)
                line.x += width
                line.content, line.has_word = line.x, True
            elif line.tokens and (line.has_word or width <= full + 1e-9):
                carried = _kinsoku_carry(line, self.text[s]) if e - s == 1 else None
                out.append(line.done())
                line = _Line(full, 0.0)
                if carried is not None:
                    line.add_word(carried)
                if width <= full + 1e-9:
                    line.add_word(token)
                else:
                    line = self._break_word(token, line, full, out)
            else:
                line = self._break_word(token, line, full, out)
        out.append(line.done(last=True))
        return out

    def _whole_line(self, start: int, end: int, avail: float) -> list[_Token] | None:
        """Fast path: a source line that fits as it is needs no tokenizing."""
        if (end - start) * self.measure.space > 4 * avail:  # surely too long: don't measure it
            return None
        segment = self.text[start:end]
        if not segment or "\t" in segment or "\n" in segment:
            return None
        content = segment.rstrip(" ")
        if self.shaper is not None:
            width = self.measure.word(content)
        else:  # word by word, as _wrap measures: the word cache answers most of it
            words = content.split(" ")
            width = sum(map(self.measure.word, words)) + self.measure.space * (len(words) - 1)
        if width > avail + 1e-9 or not content:
            return None
        tail = start + len(content)
        return [(_WORD, start, tail, width), (_SPACE, tail, end, self.measure.space * (end - tail))]

    def _break_word(self, token: _Token, line: _Line, full: float, out: list) -> _Line:
        """Split a word wider than the room left into pieces by character; return the open line."""
        tok_start, tok_end = token[1], token[2]
        if self.shaper is not None:
            return self._break_clusters(token, line, full, out)
        widths = list(itertools.accumulate(map(self.measure.char, self.text[tok_start:tok_end]), initial=0.0))
        pos, size = 0, len(widths) - 1
        while pos < size:
            cut = bisect.bisect_right(widths, widths[pos] + line.avail - line.x + 1e-9) - 1
            if cut <= pos:
                if line.tokens:  # nothing fits after what is already on the line
                    out.append(line.done())
                    line = _Line(full, 0.0)
                    continue
                cut = pos + 1  # a single character wider than the line
            line.add_word((_WORD, tok_start + pos, tok_start + cut, widths[cut] - widths[pos]))
            pos = cut
            if pos < size:
                out.append(line.done())
                line = _Line(full, 0.0)
        return line

    def _break_clusters(self, token: _Token, line: _Line, full: float, out: list) -> _Line:
        """_break_word for shaped text: cuts only between grapheme clusters, pieces measured shaped."""
        bounds = cluster_bounds(self.text, token[1], token[2])
        word = self.measure.word
        index = 0
        while index < len(bounds) - 1:
            room = line.avail - line.x + 1e-9
            cut = index + 1
            while cut < len(bounds) - 1 and word(self.text[bounds[index]:bounds[cut + 1]]) <= room:
                cut += 1
            piece = self.text[bounds[index]:bounds[cut]]
            if word(piece) > room and line.tokens:  # not even one cluster fits after what is there
                out.append(line.done())
                line = _Line(full, 0.0)
                continue
            line.add_word((_WORD, bounds[index], bounds[cut], word(piece)))
            index = cut
            if index < len(bounds) - 1:
                out.append(line.done())
                line = _Line(full, 0.0)
        return line

    # -- placing ---------------------------------------------------------------
    def _place(self, tokens: list[_Token], width: float, indent: float, last: bool, end: int) -> Line:
        cfg = self.cfg
        left = cfg.text_left + self.gutter + indent
        avail = cfg.text_width - self.gutter - indent
        gap_extra = 0.0
        alignment = cfg.alignment
        if self.shaper is not None and self._bidi is not None and self._bidi[1] == 1:
            # An RTL paragraph starts at the right margin: LEFT (and a justified last line) means "start".
            left = cfg.text_left + self.gutter
            if alignment == "LEFT" or (alignment == "JUSTIFY" and last):
                alignment = "RIGHT"
            if alignment == "RIGHT":
                left -= indent
        if alignment == "RIGHT":
            left += max(avail - width, 0.0)
        elif alignment == "CENTER":
            left += max(avail - width, 0.0) / 2
        elif alignment == "JUSTIFY" and not last:
            gaps = _inner_space_tokens(tokens)
            if gaps:
                gap_extra = max(avail - width, 0.0) / len(gaps)
        start = tokens[0][1] if tokens else end
        line = Line(start=start, end=end, top=0.0, x0=left, x1=left + width)
        if self.shaper is not None:
            line.runs, drawn = self._shaped_runs(tokens, left, gap_extra)
            line.x1 = left + drawn
        else:
            line.runs = self._runs(tokens, left, gap_extra)
        if gap_extra:
            line.x1 = left + avail
        return line

    def _runs(self, tokens: list[_Token], left: float, gap_extra: float) -> list[Run]:
        """Drawable runs: split where the font changes, at tabs, newlines and stretched gaps."""
        text = self.text
        if self.single_font and not gap_extra:
            simple = _single_run(text, tokens, left)
            if simple is not None:
                return simple
        font_of = (lambda _piece: 0) if self.single_font else self.measure.font_of
        runs: list[Run] = []
        x = left
        words = [i for i, t in enumerate(tokens) if t[0] == _WORD]
        first_word, last_word = (words[0], words[-1]) if words else (len(tokens), -1)
        current: Run | None = None
        for index, (kind, tok_start, tok_end, tok_width) in enumerate(tokens):
            if kind == _TAB or (kind == _SPACE and index > last_word):
                current = None
            elif kind == _NEWLINE:
                marker, color = self.marker
                self._mixed_runs(marker, x, runs, color)
                current = None
            else:
                pen = x
                for piece_start, piece_end, color in self._colored(tok_start, tok_end):
                    piece = text[piece_start:piece_end]
                    font = font_of(piece)
                    if font is None:
                        self._mixed_runs(piece, pen, runs, color)
                        current = None
                    elif current is not None and current.font == font and current.color == color:
                        current.text += piece
                    else:
                        current = Run(font, piece, pen, color)
                        runs.append(current)
                    if self.colors:
                        pen += self.measure.word(piece)
            x += tok_width
            if gap_extra and kind == _SPACE and first_word < index < last_word:
                x += gap_extra
                current = None
        return runs

    def _shaped_runs(self, tokens: list[_Token], left: float, gap_extra: float) -> tuple[list[Run], float]:
        """A line's runs in display order: pieces of one font and one bidi level, each shaped in its
        direction, laid out left to right (rule L2). Tabs advance to their width; stretched (inner) spaces
        get the justification's extra. Returns the runs and the drawn width."""
        words = [i for i, t in enumerate(tokens) if t[0] in (_WORD, _NEWLINE)]
        if not words:
            return [], 0.0
        text = self.text
        start, end = tokens[0][1], tokens[words[-1]][2]
        advance_of: dict[int, float] = {}  # overrides by character: tabs, stretched spaces
        for index, (kind, tok_start, tok_end, tok_width) in enumerate(tokens[:words[-1]]):
            if kind == _TAB:
                advance_of[tok_start] = tok_width
            elif kind == _SPACE and gap_extra and words[0] < index:
                advance_of[tok_end - 1] = (tok_end - tok_start) * self.measure.space + gap_extra
        pieces = self._bidi_pieces(start, end)
        runs, x = [], left
        for index in visual_order([piece[3] for piece in pieces]):
            piece_start, piece_end, font, level = pieces[index]
            piece = text[piece_start:piece_end]
            if piece == "\n" and self.marker:  # a visible newline marker
                marker, color = self.marker
                self._mixed_runs(marker, x, runs, color)
                x += self.measure.marker
                continue
            lookup = self.chain.lookup
            piece = "".join(REPLACEMENT if lookup(c)[0] == -2 else c for c in piece)  # missing: drawn as U+FFFD
            shaped = self.shaper.shape(piece.replace("\t", " ").replace("\n", " "), font, rtl=bool(level % 2))
            glyphs, offsets, pen = [], [], 0.0
            for glyph, advance, (dx, dy), cluster in zip(shaped.glyphs, shaped.advances, shaped.offsets,
                                                          shaped.clusters):
                glyphs.append(glyph)
                offsets.append((pen + dx, dy))
                pen += advance_of.get(piece_start + cluster, advance) if advance else 0.0
            visible = "".join(c for c in piece if lookup(c)[0] != -1)  # what is drawn (invisible: nothing)
            runs.append(Run(font, visible, x, glyphs=glyphs, offsets=offsets))
            x += pen
        return runs, x - left

    def _bidi_pieces(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(start, end, font, level) pieces of text[start:end]: its font runs cut where the bidi level changes."""
        hard_start, _, levels = self._bidi
        pieces = []
        for run_start, run_end, font in self.shaper.font_runs(self.text, start, end):
            for level, group in itertools.groupby(range(run_start, run_end), lambda i: levels[i - hard_start]):
                first = next(group)
                last = first + sum(1 for _ in group)
                pieces.append((first, last + 1, font, level))
        return pieces

    def _colored(self, start: int, end: int):
        """(start, end, colour) pieces of text[start:end]: one uncoloured piece unless highlighting is on."""
        if not self.colors:
            yield start, end, None
            return
        index = max(bisect.bisect_right(self.color_starts, start) - 1, 0)
        position = start
        while position < end:
            span_start, span_end, color = self.colors[index] if index < len(self.colors) else (end, end, None)
            if span_end <= position:
                index += 1
                continue
            if span_start > position:
                yield position, min(span_start, end), None
                position = min(span_start, end)
                continue
            yield position, min(span_end, end), color
            position = min(span_end, end)
            index += 1

    def _label(self, number: int) -> Run:
        """A right-aligned line number, one digit's width left of the text."""
        label = str(number)
        x = self.cfg.text_left + self.gutter - self.measure.char("0") - self.measure.word(label)
        fg, bg = parse_color(self.cfg.font_color), parse_color(self.cfg.page_bg_color)
        r, g, b = ((a + c) // 2 for a, c in zip(fg, bg))
        return Run(0, label, x, f"#{r:02X}{g:02X}{b:02X}")

    def _mixed_runs(self, piece: str, x: float, runs: list[Run], color: str | None) -> None:
        """Runs for text whose characters need different fonts (the fallback chain)."""
        lookup, char = self.chain.lookup, self.measure.char
        current: Run | None = None
        for ch in piece:
            font, _ = lookup(ch)
            width = char(ch)
            if font == -1:  # invisible: no room, nothing drawn
                continue
            if font == -2:  # no font has it: drawn as U+FFFD, counted as missing
                font, ch = self.chain.replacement_font(), REPLACEMENT
            if current is None or current.font != font:
                current = Run(font, "", x, color)
                runs.append(current)
            current.text += ch
            x += width

    # -- pages -----------------------------------------------------------------
    def _new_page(self, start: int) -> None:
        self.pages.append(PageLayout(index=len(self.pages), start=start, end=start))
        self.cursor = self.cfg.text_top

    def _close_page(self, end: int) -> None:
        self.pages[-1].end = end

    def _fits(self) -> bool:
        bottom = self.cfg.text_top + self.cfg.text_height
        return self.cursor + self.cfg.line_height <= bottom + 1e-6 or not self.pages[-1].lines

    def _append(self, line: Line) -> None:
        page = self.pages[-1]
        line.start = page.lines[-1].end if page.lines else page.start
        line.top = self.cursor
        page.lines.append(line)
        page.end = line.end
        self.cursor += self.cfg.line_height

    def _count_missing(self, page: PageLayout) -> None:
        lookup = self.chain.lookup
        for ch in set(self.text[page.start:page.end]):
            if lookup(ch)[0] == -2:
                page.missing_chars.add(ch)
        if page.missing_chars:
            chunk = self.text[page.start:page.end]
            page.missing_glyphs = sum(chunk.count(ch) for ch in page.missing_chars)


def _single_run(text: str, tokens: list[_Token], left: float) -> list[Run] | None:
    """The whole line as one run, when nothing in it (tab, marker) interrupts the pen."""
    last = len(tokens) - 1
    while last >= 0 and tokens[last][0] != _WORD:
        last -= 1
    if last < 0:
        return None
    piece = text[tokens[0][1]:tokens[last][2]]
    if "\t" in piece or "\n" in piece:
        return None
    return [Run(0, piece, left)]


def _inner_space_tokens(tokens: list[_Token]) -> list[_Token]:
    words = [i for i, t in enumerate(tokens) if t[0] == _WORD]
    if len(words) < 2:
        return []
    return [t for t in tokens[words[0]:words[-1]] if t[0] == _SPACE]



def _kinsoku_carry(line: _Line, char: str) -> _Token | None:
    """When `char` would start the next line but may not (kinsoku), take the line's last character back to
    carry it along (the line then ends a little short, as in CJK typesetting); None if nothing can go."""
    if char not in NO_LINE_START or len(line.tokens) < 2:
        return None
    last = line.tokens[-1]
    if last[0] != _WORD or last[2] - last[1] != 1 or line.tokens[-2][0] != _WORD:
        return None  # only a single CJK character right after another word moves
    line.tokens.pop()
    line.x -= last[3]
    line.content = line.x
    return last


class _Line:
    """The line being filled: its tokens, pen position and width of visible content."""

    __slots__ = ("avail", "indent", "tokens", "x", "content", "has_word")

    def __init__(self, avail: float, indent: float):
        self.avail, self.indent = avail, indent
        self.tokens: list[_Token] = []
        self.x = self.content = 0.0
        self.has_word = False

    def add_word(self, token: _Token) -> None:
        self.tokens.append(token)
        self.x += token[3]
        self.content, self.has_word = self.x, True

    def done(self, last: bool = False) -> tuple:
        return self.tokens, self.content, self.indent, last
