"""How long the DAG processor takes to parse each DAG file, in a fresh interpreter per sample.

    .venv/bin/python benchmarks/dag_parse.py [--repeats 5]

Airflow's own import is timed apart and excluded, so the figure is what the file itself costs
(its imports at module level included). Prints the median and the worst of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"airflow_import_s": t1 - t0, "parse_s": t2 - t1, "dags": sorted(bag.dag_ids),
                  "errors": len(bag.import_errors)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp()
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    print(f"{'file':28} {'median s':>9} {'worst s':>8}  airflow import (excluded), median s")
    for path in sorted((REPO / "dags").glob("*.py")):
        samples = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env,
                                 cwd=REPO, check=True).stdout
            samples.append(json.loads(out.strip().splitlines()[-1]))
        assert all(s["errors"] == 0 for s in samples), path
        parse = [s["parse_s"] for s in samples]
        print(f"{path.name:28} {statistics.median(parse):9.3f} {max(parse):8.3f}  "
              f"{statistics.median(s['airflow_import_s'] for s in samples):.2f}")


if __name__ == "__main__":
    main()
