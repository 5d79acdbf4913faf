import json
import logging

import pytest

from pipeline.render import fonts
from pipeline.render.config import RenderConfig, RenderConfigError, load_render_config
from pipeline.render.styles import available_styles, load_style

# Glyph's own config_en.json, verbatim in keys and values.
GLYPH_CONFIG_EN = {
    "page-size": "595,842", "dpi": 72, "margin-x": 10, "margin-y": 10,
    "font-path": "../config/Verdana.ttf", "font-size": 9, "line-height": 10, "font-color": "#000000",
    "alignment": "LEFT", "horizontal-scale": 1.0, "first-line-indent": 0, "left-indent": 0,
    "right-indent": 0, "space-after": 0, "space-before": 0, "border-width": 0, "border-padding": 0,
    "page-bg-color": "#FFFFFF", "para-bg-color": "#FFFFFF", "auto-crop-width": True,
    "auto-crop-last-page": True, "newline-markup": "<br/>",
}


def test_glyph_config_loads_unchanged_with_verdana_substitute(tmp_path, caplog):
    path = tmp_path / "config_en.json"
    path.write_text(json.dumps(GLYPH_CONFIG_EN))
    with caplog.at_level(logging.WARNING):
        cfg = load_render_config(path)
    assert cfg.page_size == (595.0, 842.0) and cfg.dpi == 72 and cfg.margin_x == 10
    assert cfg.font_size == 9 and cfg.line_height == 10 and cfg.alignment == "LEFT"
    assert cfg.auto_crop_width and cfg.auto_crop_last_page
    assert cfg.font_path.endswith(fonts.SANS)
    assert "Verdana" in caplog.text and "substitute" in caplog.text


def test_font_resolves_next_to_config_first(tmp_path):
    (tmp_path / "my.ttf").write_bytes((fonts.FONTS_DIR / fonts.SERIF).read_bytes())
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"font-path": "my.ttf"}))
    assert load_render_config(path).font_path == str((tmp_path / "my.ttf").resolve())


def test_missing_keys_take_glyph_defaults():
    cfg = RenderConfig.from_glyph_dict({})
    assert (cfg.margin_x, cfg.alignment, cfg.line_height, cfg.newline_markup) == (20, "JUSTIFY", 10, "<br/>")


@pytest.mark.parametrize("override, key", [
    ({"line-height": 8}, "line-height"),
    ({"alignment": "MIDDLE"}, "alignment"),
    ({"font-path": "no-such-font.ttf"}, "font-path"),
    ({"dpi": 0}, "dpi"),
    ({"dpi": -72}, "dpi"),
    ({"page-size": "100,100", "margin-x": 50}, "page-size"),
    ({"page-size": "595,30"}, "page-size"),
    ({"page-size": "595"}, "page-size"),
    ({"font-color": "not-a-colour"}, "font-color"),
    ({"margin-y": -1}, "margin-y"),
    ({"first-line-indent": -30}, "first-line-indent"),
    ({"newline-markup": "<font color='red'></font>"}, "newline-markup"),
])
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(RenderConfigError, match=f"^{key}:"):
        RenderConfig.from_glyph_dict({**GLYPH_CONFIG_EN, **override})


def test_resolved_config_round_trips():
    cfg = load_style("code")
    again = RenderConfig.from_glyph_dict(cfg.to_glyph_dict())
    assert again == cfg
    assert cfg.to_glyph_dict()["font-path"] == fonts.MONO


def test_shipped_styles_load_and_match_the_paper():
    for name in ("best-en", "best-zh", "document", "web", "code", "dark"):
        assert name in available_styles()
        assert load_style(name).style == name
    best = load_style("best-en")
    assert (best.page_size, best.dpi, best.font_size, best.line_height, best.margin_x, best.margin_y,
            best.alignment) == ((595, 842), 72, 9, 10, 10, 10, "LEFT")
    assert load_style("best-zh").font_path.endswith(fonts.CJK)
    assert load_style("code").font_path.endswith(fonts.MONO)
    dark = load_style("dark")
    assert sum(dark.page_size) and dark.page_bg_color != "#FFFFFF"


def test_unknown_style_lists_the_choices():
    with pytest.raises(RenderConfigError, match="best-en"):
        load_style("nope")


HOSTILE = [
    ({"page-size": "inf,842"}, "page-size: invalid value"),
    ({"page-size": "595,nan"}, "page-size: invalid value"),
    ({"page-size": "1e9,842"}, r"page-size: each side must be in \(0, 14400\]"),
    ({"dpi": 2400}, "page-size: 19834x28067 px at dpi 2400"),  # 5.8 GB for one page before the bound
    ({"page-size": "14400,14400", "font-size": 500}, "M pixels; the limit is 11.76 M"),
    ({"font-size": 200, "dpi": 300}, "font-size: 200 pt at dpi 300 is 833 px per em; the limit is 256"),
    ({"margin-x": 1e300}, r"margin-x: must be in \[0, 14400\]"),
    ({"tab-size": float("inf")}, "tab-size: invalid value"),
    ({"horizontal-scale": 1e9}, r"horizontal-scale: must be in \(0, 4\]"),
]


@pytest.mark.parametrize("overrides,message", HOSTILE)
def test_hostile_configs_are_refused_naming_the_key(overrides, message):
    with pytest.raises(RenderConfigError, match=message):
        RenderConfig.from_glyph_dict({"page-size": "595,842", **overrides})


def test_a_font_path_must_be_a_font(tmp_path):
    text = tmp_path / "notes.ttf"
    text.write_text("these are not glyphs")
    with pytest.raises(RenderConfigError, match=r"font-path: .*notes.ttf is not a font file \(TTF, OTF or TTC\)"):
        RenderConfig.from_glyph_dict({"font-path": str(text)})
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"\x00\x01\x00\x00" + b"\x00" * 40)
    with pytest.raises(RenderConfigError, match="fallback-fonts: .*broken.ttf is not a readable TrueType font"):
        RenderConfig.from_glyph_dict({"fallback-fonts": [str(broken)]})


def test_hostile_configs_fail_cleanly_under_a_memory_limit(tmp_path):
    """Through the CLI, with the address space capped at 3 GiB: one error line, exit 2, no traceback."""
    import json
    import subprocess
    import sys

    (tmp_path / "doc.txt").write_text("Some text to render. " * 50)
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
              "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))")
    for number, (overrides, message) in enumerate(HOSTILE[:6]):
        config = tmp_path / f"hostile-{number}.json"
        config.write_text(json.dumps({"page-size": "595,842", **{k: v for k, v in overrides.items()}}))
        result = subprocess.run([sys.executable, "-c", script, "render", "--text", str(tmp_path / "doc.txt"),
                                 "--config", str(config), "--out", str(tmp_path / f"out-{number}")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
        assert "pipeline: error:" in result.stderr
