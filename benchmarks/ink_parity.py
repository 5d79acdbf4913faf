"""Ink of the default (skia) backend against reportlab + poppler (the pdf backend, Glyph's path).

The same layout rendered by both backends at five dpi values in the light and the dark palette; ink is
each page's summed distance from its background colour. Prints skia's ink / poppler's.

    .venv/bin/python benchmarks/ink_parity.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.render.config import RenderConfig  # noqa: E402
from pipeline.render.document import Renderer  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "sample.jsonl"


def ink(pixels: np.ndarray) -> float:
    values = pixels.astype(np.float64)
    if values.ndim == 3:
        values = values.mean(axis=2)
    return float(np.abs(values - np.median(values)).sum())


def main() -> None:
    text = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])["text"][:5000]  # Areopagitica
    rows = []
    for dpi in (45, 72, 96, 150, 300):
        for name, (fg, bg) in (("light", ("#000000", "#FFFFFF")), ("dark", ("#E0E0E0", "#1E1E1E"))):
            cfg = RenderConfig.from_glyph_dict({"dpi": dpi, "font-color": fg, "page-bg-color": bg,
                                                "para-bg-color": bg, "para-border-color": bg})
            skia, pdf = (Renderer(cfg, backend).render(text).pages[0].pixels for backend in ("skia", "pdf"))
            rows.append({"dpi": dpi, "palette": name, "ink_ratio": round(ink(skia) / ink(pdf), 3),
                         "pixels_darker_than_64": [int((skia < 64).sum()), int((pdf < 64).sum())]})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
