"""RenderConfig: the typed form of the original Glyph renderer's JSON config.

A config written for Glyph's `word2png_function.py` loads unchanged: the same
hyphenated keys, the same defaults where a key is missing. A few extension keys
(`fallback-fonts`, `tab-size`, `line-numbers`, `style`) add what the original
could not express. Lengths are in PDF points (1/72 inch).

Every value is bounded, so no config can cost a worker gigabytes or hours:
page sides up to 14,400 pt (PDF's largest page); a page's pixels, after
horizontal scaling, up to what the GLM-4.1V processor uses (28*28*15000 =
11.76 M: it shrinks any larger image to that, so more is pure cost); the em up
to 256 px; finite numbers; font paths that are TrueType/OpenType fonts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import ImageColor

from pipeline.render import fonts
from pipeline.render.tokens import GLM41V

log = logging.getLogger(__name__)

ALIGNMENTS = ("LEFT", "CENTER", "RIGHT", "JUSTIFY")
# reportlab's SimpleDocTemplate frame pads its content by 6 pt on each side;
# Glyph renders through it, so its pages hold this much less text. Kept for parity.
FRAME_PADDING = 6.0
BREAK_NEWLINE = "<br/>"
MAX_PAGE_SIDE = 14400.0  # pt: PDF's largest page, 200 inches
MAX_PAGE_PIXELS = GLM41V.max_pixels  # the target processor shrinks anything larger to this
MAX_EM_PIXELS = 256.0  # a 12 pt font at 1536 dpi; the sampler's largest is under 100


class RenderConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def _field(key: str, default: Any, **kw) -> Any:
    return field(default=default, metadata={"key": key}, **kw)


@dataclass(frozen=True)
class RenderConfig:
    page_size: tuple[float, float] = _field("page-size", (595.0, 842.0))
    dpi: float = _field("dpi", 72)
    margin_x: float = _field("margin-x", 20.0)
    margin_y: float = _field("margin-y", 20.0)
    font_path: str = _field("font-path", fonts.SANS)
    font_size: float = _field("font-size", 9.0)
    line_height: float | None = _field("line-height", None)  # None: font-size + 1, as Glyph
    font_color: str = _field("font-color", "#000000")
    alignment: str = _field("alignment", "JUSTIFY")
    horizontal_scale: float = _field("horizontal-scale", 1.0)
    first_line_indent: float = _field("first-line-indent", 0.0)
    left_indent: float = _field("left-indent", 0.0)
    right_indent: float = _field("right-indent", 0.0)
    space_before: float = _field("space-before", 0.0)
    space_after: float = _field("space-after", 0.0)
    border_width: float = _field("border-width", 0.0)
    border_padding: float = _field("border-padding", 0.0)
    page_bg_color: str = _field("page-bg-color", "#FFFFFF")
    para_bg_color: str = _field("para-bg-color", "#FFFFFF")
    para_border_color: str = _field("para-border-color", "#FFFFFF")
    auto_crop_width: bool = _field("auto-crop-width", False)
    auto_crop_last_page: bool = _field("auto-crop-last-page", False)
    newline_markup: str = _field("newline-markup", BREAK_NEWLINE)
    # Extensions to the Glyph format.
    fallback_fonts: tuple[str, ...] = _field("fallback-fonts", fonts.DEFAULT_FALLBACKS)
    tab_size: int = _field("tab-size", 4)
    line_numbers: bool = _field("line-numbers", False)
    syntax_highlighting: str = _field("syntax-highlighting", "none")  # none, auto, light or dark (Pygments)
    style: str = _field("style", "custom")

    def __post_init__(self) -> None:
        if self.line_height is None:
            object.__setattr__(self, "line_height", float(self.font_size) + 1)
        font, warning = _resolve_font("font-path", self.font_path, None)
        if warning:
            log.warning(warning)
        object.__setattr__(self, "font_path", str(font))
        fallbacks = tuple(str(_resolve_font("fallback-fonts", f, None)[0]) for f in self.fallback_fonts)
        object.__setattr__(self, "fallback_fonts", fallbacks)
        self._validate()

    # -- validation -------------------------------------------------------
    def _validate(self) -> None:
        width, height = self.page_size
        _require(0 < width <= MAX_PAGE_SIDE and 0 < height <= MAX_PAGE_SIDE, "page-size",
                 f"each side must be in (0, {MAX_PAGE_SIDE:.0f}] pt, got {self.page_size}")
        _require(0 < self.dpi <= 2400, "dpi", f"must be in (0, 2400], got {self.dpi}")
        _require(0 < self.font_size <= 500, "font-size", f"must be in (0, 500] pt, got {self.font_size}")
        _require(0 < self.horizontal_scale <= 4, "horizontal-scale",
                 f"must be in (0, 4], got {self.horizontal_scale}")
        pixels_w, pixels_h = self.page_pixels
        pixels = math.ceil(pixels_w * self.horizontal_scale) * pixels_h
        _require(pixels <= MAX_PAGE_PIXELS, "page-size",
                 f"{pixels_w}x{pixels_h} px at dpi {self.dpi:g} (horizontal-scale {self.horizontal_scale:g}) is "
                 f"{pixels / 1e6:.1f} M pixels; the limit is {MAX_PAGE_PIXELS / 1e6:.2f} M (what GLM-4.1V's processor "
                 "uses: it shrinks any larger page): lower dpi or page-size")
        _require(self.font_size * self.scale <= MAX_EM_PIXELS, "font-size",
                 f"{self.font_size:g} pt at dpi {self.dpi:g} is {self.font_size * self.scale:.0f} px per em; the "
                 f"limit is {MAX_EM_PIXELS:.0f}")
        _require(
            self.line_height >= self.font_size,
            "line-height",
            f"must be >= font-size ({self.font_size}), got {self.line_height}",
        )
        _require(
            self.alignment in ALIGNMENTS,
            "alignment",
            f"must be one of {', '.join(ALIGNMENTS)}, got {self.alignment!r}",
        )
        for key in ("margin-x", "margin-y", "left-indent", "right-indent", "space-before", "space-after",
                    "border-width", "border-padding"):
            value = getattr(self, key.replace("-", "_"))
            _require(0 <= value <= MAX_PAGE_SIDE, key, f"must be in [0, {MAX_PAGE_SIDE:.0f}] pt, got {value}")
        _require(1 <= self.tab_size <= 32, "tab-size", f"must be in [1, 32], got {self.tab_size}")
        _require(self.syntax_highlighting in ("none", "auto", "light", "dark"), "syntax-highlighting",
                 f"must be none, auto, light or dark, got {self.syntax_highlighting!r}")
        text_width = self.text_width - max(self.first_line_indent, 0)
        _require(
            text_width >= self.font_size,
            "page-size",
            f"page width {width} pt leaves {text_width:.1f} pt for text after margin-x, indents "
            f"and the {FRAME_PADDING} pt frame padding; need at least font-size ({self.font_size})",
        )
        _require(
            self.text_height >= self.line_height,
            "page-size",
            f"page height {height} pt leaves {self.text_height:.1f} pt after margin-y and the "
            f"{FRAME_PADDING} pt frame padding; need at least line-height ({self.line_height})",
        )
        _require(
            self.left_indent + self.first_line_indent >= 0,
            "first-line-indent",
            f"a hanging indent ({self.first_line_indent}) must not reach past left-indent ({self.left_indent})",
        )
        for key in ("font-color", "page-bg-color", "para-bg-color", "para-border-color"):
            parse_color(getattr(self, key.replace("-", "_")), key)
        if self.newline_markup != BREAK_NEWLINE:
            parse_newline_markup(self.newline_markup)

    # -- derived geometry (points) -----------------------------------------
    @property
    def text_left(self) -> float:
        return self.margin_x + FRAME_PADDING + self.left_indent

    @property
    def text_width(self) -> float:
        return self.page_size[0] - 2 * (self.margin_x + FRAME_PADDING) - self.left_indent - self.right_indent

    @property
    def text_top(self) -> float:
        return self.margin_y + FRAME_PADDING

    @property
    def text_height(self) -> float:
        return self.page_size[1] - 2 * (self.margin_y + FRAME_PADDING)

    @property
    def scale(self) -> float:
        """Pixels per point."""
        return self.dpi / 72.0

    @property
    def page_pixels(self) -> tuple[int, int]:
        """Raster size before horizontal scaling and cropping (as pdftoppm sizes it)."""
        return (math.ceil(self.page_size[0] * self.scale - 1e-6), math.ceil(self.page_size[1] * self.scale - 1e-6))

    @property
    def px_per_em(self) -> float:
        """Effective pixels per em: the font size in pixels, narrowed by a horizontal squeeze."""
        return self.font_size * self.scale * min(1.0, self.horizontal_scale)

    @property
    def page_luminance(self) -> float:
        return _luminance(self.page_bg_color)

    @property
    def contrast(self) -> float:
        """WCAG contrast ratio of the text colour on the paragraph background (1: invisible, 21: black on
        white)."""
        lighter, darker = sorted((_luminance(self.font_color), _luminance(self.para_bg_color)), reverse=True)
        return (lighter + 0.05) / (darker + 0.05)

    @property
    def font_chain(self) -> tuple[str, ...]:
        return (self.font_path, *self.fallback_fonts)

    @property
    def is_gray(self) -> bool:
        if self.syntax_highlighting != "none":
            return False
        colors = [self.font_color, self.page_bg_color, self.para_bg_color, self.para_border_color]
        if self.newline_markup != BREAK_NEWLINE:
            colors.append(parse_newline_markup(self.newline_markup)[1] or self.font_color)
        return all(len(set(parse_color(c))) == 1 for c in colors)

    # -- (de)serialization -------------------------------------------------
    @classmethod
    def from_glyph_dict(cls, data: dict, base_dir: Path | None = None) -> RenderConfig:
        """Build from Glyph's hyphenated JSON keys; font paths resolve against base_dir."""
        by_key = {f.metadata["key"]: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key.startswith("x-"):  # annotations (e.g. "x-search" scores): not rendering settings
                continue
            if key not in by_key:
                log.warning("render config: ignoring unknown key %r", key)
                continue
            kwargs[by_key[key].name] = _coerce(key, value, by_key[key].default)
        font, warning = _resolve_font("font-path", kwargs.get("font_path", fonts.SANS), base_dir)
        if warning:
            log.warning(warning)
        kwargs["font_path"] = str(font)  # resolved here so __post_init__ sees no missing font
        fallbacks = kwargs.get("fallback_fonts", fonts.DEFAULT_FALLBACKS)
        kwargs["fallback_fonts"] = tuple(str(_resolve_font("fallback-fonts", f, base_dir)[0]) for f in fallbacks)
        try:
            return cls(**kwargs)
        except TypeError as err:  # pragma: no cover - defensive
            raise RenderConfigError(str(err)) from None

    def to_glyph_dict(self) -> dict:
        """The resolved config in Glyph's format; bundled fonts are named by file name."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "page_size":
                value = f"{_num(value[0])},{_num(value[1])}"
            elif f.name == "font_path":
                value = _portable_font(value)
            elif f.name == "fallback_fonts":
                value = [_portable_font(v) for v in value]
            out[f.metadata["key"]] = value
        return out

    def replace(self, **changes) -> RenderConfig:
        return dataclasses.replace(self, **changes)

    def with_overrides(self, data: dict, base_dir: Path | None = None) -> RenderConfig:
        merged = self.to_glyph_dict()
        merged.update(data)
        return RenderConfig.from_glyph_dict(merged, base_dir)


def load_render_config(path: str | Path) -> RenderConfig:
    """Load a Glyph-format JSON config file; font paths resolve next to the file first."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderConfigError(f"render config {str(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise RenderConfigError(f"render config {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise RenderConfigError(f"render config {str(path)!r} must hold a JSON object")
    return RenderConfig.from_glyph_dict(data, base_dir=path.parent)


def parse_color(value: str, key: str = "color") -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(str(value))
    except ValueError:
        raise RenderConfigError(f"{key}: not a colour: {value!r} (use #RRGGBB)") from None
    return tuple(rgb[:3])


def _luminance(color: str) -> float:
    """WCAG relative luminance of an sRGB colour."""
    channels = [c / 255 for c in parse_color(color)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def parse_newline_markup(markup: str) -> tuple[str, str | None]:
    """The visible marker drawn for a newline, and its colour (None: font colour).

    >>> parse_newline_markup('<font color="#FF0000"> \\\\n </font>')
    (' \\\\n ', '#FF0000')
    """
    import re
    from xml.sax.saxutils import unescape

    color = re.search(r"""color\s*=\s*["']?([#\w]+)""", markup)
    text = unescape(re.sub(r"<[^>]*>", "", markup)).replace("&nbsp;", "\u00a0")
    if not text or "\n" in text:
        raise RenderConfigError(
            f"newline-markup: must be '<br/>' or markup with visible marker text, got {markup!r}"
        )
    return text, color.group(1) if color else None


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RenderConfigError(f"{key}: {message}")


def _resolve_font(key: str, name: str, base_dir: Path | None) -> tuple[Path, str | None]:
    try:
        path, warning = fonts.resolve_font_path(str(name), base_dir)
        fonts.check_font_file(str(path))
        return path, warning
    except (fonts.FontNotFoundError, fonts.FontFileError) as err:
        raise RenderConfigError(f"{key}: {err}") from None


def _coerce(key: str, value: Any, default: Any) -> Any:
    try:
        if key == "page-size":
            parts = value.split(",") if isinstance(value, str) else list(value)
            if len(parts) != 2 or not all(math.isfinite(float(part)) for part in parts):
                raise ValueError
            return (float(parts[0]), float(parts[1]))
        if key == "alignment":
            if isinstance(value, int) and 0 <= value < 4:  # reportlab TA_* enums
                return ("LEFT", "CENTER", "RIGHT", "JUSTIFY")[value]
            return str(value).strip().upper()
        if key == "fallback-fonts":
            return tuple(str(v) for v in value)
        if key == "tab-size":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes")
            return bool(value)
        if key == "line-height" and value is None:
            return None
        if isinstance(default, (int, float)) or key == "line-height":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise RenderConfigError(f"{key}: invalid value {value!r}") from None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@functools.lru_cache(maxsize=256)
def _portable_font(path: str) -> str:
    p = Path(path)
    try:
        if p.resolve().parent == fonts.FONTS_DIR.resolve():
            return p.name
    except OSError:
        pass
    return str(p)
