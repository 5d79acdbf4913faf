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
