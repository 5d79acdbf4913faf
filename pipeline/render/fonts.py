"""Fonts: where they live, their metrics, and the per-character fallback chain.

Layout measures text with the fonts' own advance widths (hmtx, unhinted), so
both backends place every glyph at the same position.
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import REPO_ROOT

log = logging.getLogger(__name__)

FONTS_DIR = Path(os.environ.get("GLYPH_FONTS_DIR", REPO_ROOT / "fonts"))

SANS = "DejaVuSans.ttf"
SERIF = "DejaVuSerif.ttf"
MONO = "DejaVuSansMono.ttf"
CJK = "DroidSansFallbackFull.ttf"
DEFAULT_FALLBACKS = (SANS, SERIF, MONO, CJK)
FAMILIES = {"sans": SANS, "serif": SERIF, "mono": MONO, "cjk": CJK}

# Fonts named by Glyph's configs (or common in configs) that we cannot ship,
# and the free font used in their place. Documented in fonts/README.md.
SUBSTITUTES = (
    (("verdana", "tahoma", "arial", "helvetica", "segoe"), SANS),
    (("times", "georgia", "garamond", "cambria"), SERIF),
    (("courier", "consola", "menlo", "monaco"), MONO),
    (("sourcehan", "notosanscjk", "simsun", "simhei", "msyh", "pingfang"), CJK),
)

# Characters that draw nothing by definition: if no font has them they are
# zero-width and are not counted as missing glyphs.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Cc"})
REPLACEMENT = "\ufffd"


class FontNotFoundError(FileNotFoundError):
    pass


def resolve_font_path(name: str, base_dir: Path | None = None) -> tuple[Path, str | None]:
    """Find a font file: next to the config, as given, then by file name in fonts/.

    Returns the path and, when a substitute was used, a warning message.
    """
    given = Path(name)
    candidates = []
    if base_dir is not None and not given.is_absolute():
        candidates.append(base_dir / given)
    candidates += [given, FONTS_DIR / given.name]
    for path in candidates:
        if path.is_file():
            return path.resolve(), None
    lowered = given.name.lower().replace("-", "").replace("_", "")
    for needles, substitute in SUBSTITUTES:
        if any(needle in lowered for needle in needles):
            warning = f"font {name!r} not found; using free substitute {substitute} (see fonts/README.md)"
            return (FONTS_DIR / substitute).resolve(), warning
    looked = ", ".join(str(p) for p in candidates)
    raise FontNotFoundError(f"font file {name!r} not found (looked in: {looked})")


@dataclass(frozen=True)
class FontFace:
    """One font file's character coverage and metrics, in em units."""

    path: Path
    advances: dict[int, float]  # code point -> advance width in em
    ascent: float
    descent: float  # positive, below the baseline

    def has(self, char: str) -> bool:
        return ord(char) in self.advances


FONT_SIGNATURES = {b"\x00\x01\x00\x00": "TrueType", b"true": "TrueType", b"OTTO": "OpenType",
                   b"ttcf": "TrueType collection"}


class FontFileError(ValueError):
    pass


@functools.lru_cache(maxsize=256)
def check_font_file(path: str) -> None:
    """Raise FontFileError unless path is a TrueType/OpenType font or collection whose tables read."""
    with open(path, "rb") as handle:
        signature = handle.read(4)
    if signature not in FONT_SIGNATURES:
        raise FontFileError(f"{path} is not a font file (TTF, OTF or TTC); it starts with {signature!r}")
    try:
        load_face(path)
    except Exception as err:  # noqa: BLE001 - any failure to read the tables means an unusable font
        raise FontFileError(f"{path} is not a readable {FONT_SIGNATURES[signature]} font: "
                            f"{type(err).__name__}: {err}") from None


@functools.lru_cache(maxsize=32)
def load_face(path: str | Path) -> FontFace:
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True, fontNumber=0) as font:  # a collection (.ttc): its first font
        upem = font["head"].unitsPerEm
        hmtx = font["hmtx"].metrics
        cmap = font.getBestCmap() or {}
        advances = {code: hmtx[glyph][0] / upem for code, glyph in cmap.items()}
        hhea = font["hhea"]
        ascent, descent = hhea.ascent / upem, abs(hhea.descent) / upem
    return FontFace(Path(path), advances, ascent, descent)


@dataclass
class FontChain:
    """The primary font followed by its fallbacks; resolves each character."""

    faces: list[FontFace]
    _lookup: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_paths(cls, paths) -> FontChain:
        unique = list(dict.fromkeys(str(p) for p in paths))
        return cls([load_face(p) for p in unique])

    @property
    def primary(self) -> FontFace:
        return self.faces[0]

    def lookup(self, char: str) -> tuple[int, float]:
        """(font index, advance in em) for one character.

        Font index -1: no font has it and it is invisible (zero width);
        -2: no font has it and it is drawn as U+FFFD (a missing glyph).
        """
        found = self._lookup.get(char)
        if found is None:
            found = self._resolve(char)
            self._lookup[char] = found
        return found

    def _resolve(self, char: str) -> tuple[int, float]:
        code = ord(char)
        for index, face in enumerate(self.faces):
            advance = face.advances.get(code)
            if advance is not None:
                return index, advance
        if unicodedata.category(char) in INVISIBLE_CATEGORIES:
            return -1, 0.0
        index, advance = self.lookup(REPLACEMENT) if char != REPLACEMENT else (0, 0.5)
        return -2, advance

    def replacement_font(self) -> int:
        index, _ = self.lookup(REPLACEMENT)
        return max(index, 0)
