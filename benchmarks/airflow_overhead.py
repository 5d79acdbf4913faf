"""What running a render through Airflow costs over running the same commands by hand.

    .venv/bin/python benchmarks/airflow_overhead.py [--repeats 3]

Starts `airflow standalone` on 127.0.0.1 (temporary SQLite), then for each repeat, side by
side on the bundled sample corpus (local output, 2 input shards, skia):
  direct:  pipeline shard; pipeline render-corpus; pipeline verify  (three processes)
  airflow: glyph_render triggered through the REST API, trigger to run success
Prints the medians and the difference, Airflow's scheduling and task start-up included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.airflow_server import AirflowStandalone  # noqa: E402  (the REST client the tests use)

CORPUS = REPO / "data" / "sample" / "sample.jsonl"


def direct(out: Path) -> float:
    pipeline = str(Path(sys.executable).parent / "pipeline")
    started = time.perf_counter()
    for command in (["shard", str(CORPUS), "--out", str(out / "input"), "--num-shards", "2"],
                    ["render-corpus", str(out / "input"), "--out", str(out / "rendered"), "--styles", "web=1"],
                    ["verify", str(out / "rendered")]):
        subprocess.run([pipeline, *command], check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def through_airflow(server: AirflowStandalone, out: Path) -> float:
    started = time.perf_counter()
    run_id = server.trigger("glyph_render", {"corpus_uri": str(CORPUS), "output_uri": str(out), "styles": "web=1",
                                             "num_shards": 2})
    state = server.wait_for_run("glyph_render", run_id)
    if state != "success":
        raise SystemExit(f"glyph_render {run_id}: {state}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="airflow-overhead-"))
    server = AirflowStandalone(work / "home")
    (work / "home").mkdir()
    started = time.perf_counter()
    server.start()
    server.wait_for_dag("glyph_render")
    print(f"airflow standalone up and glyph_render parsed in {time.perf_counter() - started:.1f} s")
    try:
        times = {"direct": [], "airflow": []}
        for repeat in range(args.repeats):
            times["direct"].append(direct(work / f"direct-{repeat}"))
            times["airflow"].append(through_airflow(server, work / f"airflow-{repeat}"))
            print(f"repeat {repeat + 1}: direct {times['direct'][-1]:.1f} s, airflow {times['airflow'][-1]:.1f} s")
    finally:
        left = server.stop()
    d, a = statistics.median(times["direct"]), statistics.median(times["airflow"])
    print(f"median: direct {d:.1f} s, through airflow {a:.1f} s, overhead {a - d:.1f} s per run"
          + (f" (left running: {left})" if left else ""))


if __name__ == "__main__":
    main()
