import pytest

from pipeline.render.normalize import InvalidUnicodeError, normalize_text


def test_line_endings_become_lf():
    assert normalize_text("a\r\nb\rc\nd") == "a\nb\nc\nd"


def test_removes_only_the_listed_characters():
    raw = "x\u00ady\u200bz\ufeff\x00\x07\x1b[0m\x7f\x85w"
    assert normalize_text(raw) == "xyz[0mw"


def test_keeps_everything_else():
    kept = "\tTab  two spaces \n\n<b>&amp;<br/> \u05e9\u05dc\u05d5\u05dd \U0001F600 trailing  \n"
    assert normalize_text(kept) == kept


def test_nfc_composes_after_removal():
    assert normalize_text("e\u00ad\u0301") == "\u00e9"


def test_lone_surrogate_is_an_error():
    with pytest.raises(InvalidUnicodeError, match="U\\+D800"):
        normalize_text("ok \ud800")
