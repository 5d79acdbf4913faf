"""The one text normalization shared by the renderer and the corpus sharder.

It may do only this: CRLF and CR to LF; Unicode NFC; removal of U+00AD, U+200B,
U+FEFF and of control characters other than tab and newline. Everything else is
kept, so a page's target text is exactly what the reader sees drawn.
"""

import re
import unicodedata

# C0 and C1 controls except \t (0x09) and \n (0x0A), plus DEL, soft hyphen,
# zero-width space and byte-order mark.
_REMOVED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\ufeff]")


class InvalidUnicodeError(ValueError):
    """The text holds code points that no UTF-8 encoder accepts (lone surrogates)."""


def check_unicode(text: str) -> None:
    """Raise InvalidUnicodeError if `text` cannot be encoded as UTF-8.

    >>> check_unicode("ok")
    >>> check_unicode("bad\\ud800")
    Traceback (most recent call last):
    ...
    pipeline.render.normalize.InvalidUnicodeError: lone surrogate U+D800 at index 3
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        raise InvalidUnicodeError(f"lone surrogate U+{code:04X} at index {err.start}") from None


def normalize_text(text: str) -> str:
    """Return the normalized text that pages must join back to.

    >>> normalize_text("a\\r\\nb\\rc\\u00add\\x07\\te\\u200b")
    'a\\nb\\ncd\\te'
    >>> normalize_text("e\\u0301") == "\\u00e9"
    True
    """
    check_unicode(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Remove first: a soft hyphen between a letter and its combining mark must
    # not stop the two from composing.
    return unicodedata.normalize("NFC", _REMOVED.sub("", text))
