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
# Free fonts for the world's scripts that set-up installs (Debian fonts-noto-core, -cjk, -color-emoji; OFL).
SYSTEM_FONT_DIRS = tuple(Path(d) for d in os.environ.get(
    "GLYPH_SYSTEM_FONT_DIRS", "/usr/share/fonts/truetype/noto:/usr/share/fonts/opentype/noto").split(":") if d)
WORLD_FONTS = (  # after the bundled chain, in this order; those not installed are left out
    "NotoSansArabic-Regular.ttf", "NotoNaskhArabic-Regular.ttf", "NotoSansHebrew-Regular.ttf",
    "NotoSansDevanagari-Regular.ttf", "NotoSansBengali-Regular.ttf", "NotoSansTamil-Regular.ttf",
    "NotoSansThai-Regular.ttf", "NotoSansEthiopic-Regular.ttf", "NotoSansCJK-Regular.ttc", "NotoColorEmoji.ttf",
    "NotoSans-Regular.ttf", "NotoSansSymbols-Regular.ttf", "NotoSansSymbols2-Regular.ttf", "NotoSansMath-Regular.ttf",
)

SANS = "DejaVuSans.ttf"
SERIF = "DejaVuSerif.ttf"
MONO = "DejaVuSansMono.ttf"
CJK = "DroidSansFallbackFull.ttf"
DEFAULT_FALLBACKS = (SANS, SERIF, MONO, CJK, *(name for name in WORLD_FONTS
                                               if any((d / name).is_file() for d in SYSTEM_FONT_DIRS)))
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
    candidates += [given, FONTS_DIR / given.name, *(folder / given.name for folder in SYSTEM_FONT_DIRS)]
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
    color: bool = False  # colour glyphs (emoji): drawn in colour, not as a mask

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
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, lazy=True, fontNumber=0) as font:  # its table directory and header tables read
            missing = [tag for tag in ("head", "hhea", "hmtx", "cmap") if tag not in font]
            font["head"].unitsPerEm, font["hhea"].ascent
        if missing:
            raise ValueError(f"no {', '.join(missing)} table")
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
        color = any(tag in font for tag in ("CBDT", "COLR", "sbix", "SVG "))
    return FontFace(Path(path), advances, ascent, descent, color)


class LazyFaces:
    """The chain's faces, each read on first use: most text needs only the first, and the world fonts'
    tables (CJK, emoji) take a while to read."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> FontFace:
        return load_face(self.paths[index])

    def __iter__(self):
        return (load_face(path) for path in self.paths)


@dataclass
class FontChain:
    """The primary font followed by its fallbacks; resolves each character."""

    faces: LazyFaces
    _lookup: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_paths(cls, paths) -> FontChain:
        return cls(LazyFaces(list(dict.fromkeys(str(p) for p in paths))))

    @property
    def paths(self) -> list[str]:
        return self.faces.paths

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
        if unicodedata.category(char) == "Cc":  # control characters (newline, tab) are never drawn
            return -1, 0.0
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
