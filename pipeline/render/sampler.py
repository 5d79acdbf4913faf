"""Seeded style sampler over the Glyph paper's pre-training rendering ranges.

Same seed, same config. Draws that make an invalid config (a page too small
for its margins, a hanging indent past the margin, ...) are rejected and redrawn.
"""

from __future__ import annotations

import random

from pipeline.render import fonts
from pipeline.render.config import RenderConfig, RenderConfigError

PAGE_SIZES = {
    "A4": (595, 842), "Letter": (612, 792), "Legal": (612, 1008), "A5": (420, 595),
    "B5": (499, 709), "A3": (842, 1191), "B4": (709, 1001), "Tabloid": (792, 1224),
}
ASPECT_RATIOS = (1.414, 1.333, 1.5, 1.778)
DPI_SET = (72, 80, 96, 100, 110, 120, 144, 150, 300)
FONT_SIZES = (7, 7.5, 8, 9, 9.5, 10, 11, 12, 14)
FAMILIES = {"serif": fonts.SERIF, "sans": fonts.SANS, "mono": fonts.MONO}
H_SCALES = ((1.0, 0.5), (0.95, 0.2), (0.9, 0.12), (0.85, 0.08), (0.8, 0.06), (0.75, 0.04))
LIGHT = (("#FFFFFF", "#000000"), ("#FFFFFF", "#222222"), ("#FAF8F0", "#1A1A1A"), ("#F2F2F2", "#000000"),
         ("#FFFFFF", "#1F2A44"))
DARK = (("#1E1E1E", "#D4D4D4"), ("#000000", "#FFFFFF"), ("#282C34", "#ABB2BF"), ("#121212", "#E0E0E0"))
NEWLINE_MARKER = '<font color="#FF0000"> \\n </font>'
MAX_TRIES = 100
# Text mostly in a script the Latin families lack gets a family made for it (those installed; fonts/README.md).
SCRIPTS = {  # name: (first, last code point), families
    "arabic": ((0x0600, 0x06FF), ("NotoNaskhArabic-Regular.ttf", "NotoSansArabic-Regular.ttf")),
    "hebrew": ((0x0590, 0x05FF), ("NotoSansHebrew-Regular.ttf",)),
    "devanagari": ((0x0900, 0x097F), ("NotoSansDevanagari-Regular.ttf",)),
    "bengali": ((0x0980, 0x09FF), ("NotoSansBengali-Regular.ttf",)),
    "tamil": ((0x0B80, 0x0BFF), ("NotoSansTamil-Regular.ttf",)),
    "thai": ((0x0E00, 0x0E7F), ("NotoSansThai-Regular.ttf",)),
    "ethiopic": ((0x1200, 0x137F), ("NotoSansEthiopic-Regular.ttf",)),
    "hangul": ((0xAC00, 0xD7AF), ("NotoSansCJK-Regular.ttc",)),
    "han": ((0x4E00, 0x9FFF), (fonts.CJK, "NotoSansCJK-Regular.ttc")),
}


def dominant_script(text: str) -> str | None:
    """The script of most letters in text's first 4,000 characters, if it is one of SCRIPTS.

    >>> dominant_script("مرحبا بالعالم (hello world)"), dominant_script("plain English")
    ('arabic', None)
    """
    counts: dict[str | None, int] = {}
    for char in text[:4000]:
        if char.isalpha():
            code = ord(char)
            script = next((name for name, ((low, high), _) in SCRIPTS.items() if low <= code <= high), None)
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else None


def script_families(script: str | None) -> list[str]:
    """The installed families made for a script (empty: the Latin families serve)."""
    if script not in SCRIPTS:
        return []
    found = []
    for name in SCRIPTS[script][1]:
        try:
            found.append(str(fonts.resolve_font_path(name)[0]))
        except fonts.FontNotFoundError:
            continue
    return found


class StyleSampler:
    """`min_px_per_em`: redraw configs whose text would be smaller than this many effective pixels per em
    (Glyph trains on low dpi too, so there is no floor by default)."""

    def __init__(self, seed: int | str = 0, min_px_per_em: float | None = None):
        self.seed, self.min_px_per_em = seed, min_px_per_em

    def sample(self, key: str | int = "", text: str | None = None) -> RenderConfig:
        """The config for `key` (for example a document id) under this sampler's seed; with the document's
        `text`, a family made for its script when the Latin ones lack it."""
        rng = random.Random(f"{self.seed}:{key}")
        families = script_families(dominant_script(text)) if text else []
        for _ in range(MAX_TRIES):
            try:
                drawn = self._draw(rng)
                if families:
                    drawn["font_path"] = rng.choice(families)
                    drawn["style"] += "-" + dominant_script(text)
                cfg = RenderConfig(**drawn)
            except RenderConfigError:
                continue
            if self.min_px_per_em is None or cfg.px_per_em >= self.min_px_per_em:
                return cfg
        raise RuntimeError(f"style sampler: no valid config in {MAX_TRIES} draws (seed {self.seed!r}, key {key!r})")

    @staticmethod
    def _dpi(rng: random.Random) -> int:
        bucket = rng.choices(("low", "lowmid", "mid", "set", "high"), weights=(8, 14, 45, 30, 3))[0]
        if bucket == "set":
            return rng.choice(DPI_SET)
        low, high = {"low": (45, 59), "lowmid": (60, 71), "mid": (72, 119), "high": (301, 400)}[bucket]
        return rng.randint(low, high)

    @staticmethod
    def _page(rng: random.Random) -> tuple[float, float]:
        if rng.random() < 0.7:
            return PAGE_SIZES[rng.choice(sorted(PAGE_SIZES))]
        width = rng.randint(420, 842)
        return (width, round(width * rng.choice(ASPECT_RATIOS)))

    def _draw(self, rng: random.Random) -> dict:
        size = rng.choice(FONT_SIZES)
        family = rng.choices(sorted(FAMILIES), weights=(15, 45, 40))[0]  # mono, sans, serif
        dark = rng.random() < 0.2
        background, foreground = rng.choice(DARK if dark else LIGHT)
        indent = rng.choices(("none", "first-line", "hanging"), weights=(60, 25, 15))[0]
        left_indent = first_line = 0.0
        if indent == "first-line":
            first_line = rng.randint(8, 30)
        elif indent == "hanging":
            left_indent = rng.randint(8, 30)
            first_line = -left_indent
        spacing = rng.choices((0, 1, 2), weights=(60, 25, 15))[0]
        space = (0.0, rng.uniform(2, 4), rng.uniform(6, 12))[spacing]
        return {
            "page_size": self._page(rng),
            "dpi": self._dpi(rng),
            "margin_x": rng.randint(10, 40),
            "margin_y": rng.randint(10, 40),
            "font_path": FAMILIES[family],
            "font_size": size,
            "line_height": size + rng.randint(0, 3),
            "font_color": foreground,
            "page_bg_color": background,
            "para_bg_color": background,
            "para_border_color": background,
            "alignment": rng.choices(("LEFT", "JUSTIFY", "RIGHT", "CENTER"), weights=(45, 45, 5, 5))[0],
            "horizontal_scale": rng.choices([s for s, _ in H_SCALES], weights=[w for _, w in H_SCALES])[0],
            "first_line_indent": first_line,
            "left_indent": left_indent,
            "space_before": round(space / 2, 2),
            "space_after": round(space, 2),
            "auto_crop_width": rng.random() < 0.5,
            "auto_crop_last_page": rng.random() < 0.7,
            "newline_markup": NEWLINE_MARKER if rng.random() < 0.1 else "<br/>",
            "style": f"random-{'dark' if dark else 'light'}-{family}",
        }
