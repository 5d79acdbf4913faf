"""Tesseract's character error rate on Arabic, Hebrew, Hindi and Thai pages: ours against Pango's.

Text: territory names from the Unicode CLDR (the `babel` package), 600 characters per language, rendered
at 150 dpi, 12 pt, line height 18, left aligned, by the default backend; the same page text rendered by
`pango-view` (Debian pango1.0-tools, which shapes and reorders) at the same size, dpi and width. Both are
read by tesseract with the language's Debian traineddata.

    .venv/bin/python benchmarks/shaping_ocr.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytesseract  # noqa: E402
from babel import Locale  # noqa: E402
from PIL import Image  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402

from pipeline.render.config import RenderConfig  # noqa: E402
from pipeline.render.document import Renderer  # noqa: E402

LANGUAGES = {"ar": "ara", "he": "heb", "hi": "hin", "th": "tha"}


def words(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    cfg = RenderConfig(dpi=150, font_size=12, line_height=18, alignment="LEFT")
    report = {}
    for language, traineddata in LANGUAGES.items():
        names = [name for code, name in sorted(Locale.parse(language).territories.items()) if code.isalpha()]
        page = Renderer(cfg, "skia").render(" ".join(names)[:600]).pages[0]
        ours = pytesseract.image_to_string(Image.fromarray(page.pixels), lang=traineddata)
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run(["pango-view", "-q", f"--text={page.text}", "--font=DejaVu Sans 12", "--dpi=150",
                            "--width=1100", "--wrap=word", "-o", f"{folder}/pango.png"], check=True)
            pango = pytesseract.image_to_string(Image.open(f"{folder}/pango.png"), lang=traineddata)
        report[language] = {"ours": round(Levenshtein.normalized_distance(words(page.text), words(ours)), 3),
                            "pango": round(Levenshtein.normalized_distance(words(page.text), words(pango)), 3)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
