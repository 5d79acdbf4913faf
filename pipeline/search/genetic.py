"""`pipeline search`: genetic search over render configs, resumable, with an optional LLM critic.

Each generation: evaluate the population (cached by genes), keep the elite,
fill the rest with children of tournament-selected parents (crossover, then
mutation) and, when a critic is configured, with its repaired proposals.
State is saved after every evaluation, so a killed search resumes where it
stopped without evaluating anything twice. The random generator's state is
saved with each generation, so a resumed search makes the same choices.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass

from pipeline import storage
from pipeline.search.fitness import Fitness
from pipeline.search.space import BEST_EN, crossover, key, mutate, random_candidate, to_config

log = logging.getLogger(__name__)
STATE = "search_state.json"


@dataclass
class SearchSettings:
    population: int = 16
    generations: int = 10
    max_evaluations: int | None = None
    seed: int = 0
    elite: int | None = None  # default: 2, or population - 1 when smaller
    tournament: int = 3
    mutation_rate: float = 0.25
    patience: int = 3  # stop after this many generations without improvement
    min_improvement: float = 1e-4
    critic_share: float = 0.25  # at most this share of each new generation comes from the critic

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"population: must be >= 2, got {self.population}")
        if self.generations < 1:
            raise ValueError(f"generations: must be >= 1, got {self.generations}")
        if self.elite is None:
            self.elite = min(2, self.population - 1)
        if not 0 <= self.elite < self.population:
            raise ValueError(f"elite: must be in [0, population), got {self.elite}")


class GeneticSearch:
    def __init__(self, settings: SearchSettings, evaluator, items, out_uri: str, fitness: Fitness | None = None,
                 critic=None):
        self.settings, self.evaluator, self.items = settings, evaluator, items
        self.out_uri, self.fitness, self.critic = out_uri, fitness or Fitness(), critic
        self.store = storage.get_storage(out_uri)
        self.state = self._load() or self._fresh()

    # -- state ------------------------------------------------------------------
    def _fresh(self) -> dict:
        rng = random.Random(self.settings.seed)
        population = [dict(BEST_EN)]  # the paper's best config competes from the start
        while len(population) < self.settings.population:
            candidate = random_candidate(rng)
            if self._valid(candidate):
                population.append(candidate)
        return {"settings": asdict(self.settings), "fitness": self.fitness.describe(),
                "evaluator": self.evaluator.name, "generation": 0, "population": population,
                "rng": _dump_rng(rng), "evaluations": {}, "history": [], "done": False,
                "evaluated_now": 0}

    def _load(self) -> dict | None:
        uri = storage.join(self.out_uri, STATE)
        if not self.store.exists(uri):
            return None
        state = json.loads(self.store.read_text(uri))
        if state["settings"] != asdict(self.settings) or state["evaluator"] != self.evaluator.name:
            raise ValueError(f"{uri}: saved by a search with other settings or another evaluator; "
                             "use another --out or the same settings")
        state["evaluated_now"] = 0
        return state

    def _save(self) -> None:
        self.store.write_text(storage.join(self.out_uri, STATE), json.dumps(self.state, indent=1) + "\n")

    # -- loop ---------------------------------------------------------------------
    def run(self) -> dict:
        state = self.state
        while not state["done"]:
            self._evaluate_population()
            self._record_generation()
            if self._should_stop():
                state["done"] = True
            else:
                self._next_generation()
            self._save()
        return self._publish()

    def _evaluate_population(self) -> None:
        evaluations = self.state["evaluations"]
        for genes in self.state["population"]:
            if key(genes) in evaluations:
                continue
            if self._budget_spent():
                return
            started = time.perf_counter()
            score = self.evaluator.evaluate(to_config(genes), self.items)
            result = {"genes": genes, **score.to_dict(), "generation": self.state["generation"],
                      "fitness": self.fitness(score.accuracy, score.compression_ratio),
                      "seconds": round(time.perf_counter() - started, 2)}
            evaluations[key(genes)] = result
            self.state["evaluated_now"] += 1
            log.info("gen %d: accuracy %.4f ratio %.3f fitness %.4f", self.state["generation"], score.accuracy,
                     score.compression_ratio, result["fitness"])
            self._save()  # after every evaluation: a killed search loses at most the one running

    def _budget_spent(self) -> bool:
        limit = self.settings.max_evaluations
        return limit is not None and len(self.state["evaluations"]) >= limit

    def _scored(self) -> list[dict]:
        evaluations = self.state["evaluations"]
        return [evaluations[key(g)] for g in self.state["population"] if key(g) in evaluations]

    def _record_generation(self) -> None:
        scored = self._scored()
        best = max(self.state["evaluations"].values(), key=lambda e: e["fitness"])
        entry = {"generation": self.state["generation"], "evaluated": len(scored),
                 "best_fitness": best["fitness"], "mean_fitness": round(sum(e["fitness"] for e in scored)
                                                                       / max(len(scored), 1), 6),
                 "points": [[e["accuracy"], e["compression_ratio"]] for e in scored]}
        history = self.state["history"]
        if history and history[-1]["generation"] == entry["generation"]:
            history[-1] = entry
        else:
            history.append(entry)
        print(f"generation {entry['generation']}: best fitness {entry['best_fitness']:.4f}, "
              f"mean {entry['mean_fitness']:.4f}", file=sys.stderr)

    def _should_stop(self) -> bool:
        history, settings = self.state["history"], self.settings
        if self.state["generation"] + 1 >= settings.generations or self._budget_spent():
            return True
        if len(history) > settings.patience:
            earlier = history[-settings.patience - 1]["best_fitness"]
            if history[-1]["best_fitness"] - earlier < settings.min_improvement:
                return True  # converged
        return False

    def _next_generation(self) -> None:
        settings, rng = self.settings, _load_rng(self.state["rng"])
        ranked = sorted(self._scored(), key=lambda e: -e["fitness"])
        children = [dict(e["genes"]) for e in ranked[: settings.elite]]
        if self.critic is not None:
            wanted = max(1, int(settings.population * settings.critic_share))
            proposals = self.critic.propose(list(self.state["evaluations"].values()), self.fitness.describe(),
                                            wanted, ranked[0]["genes"])
            children += [p for p in proposals if key(p) not in {key(c) for c in children}][:wanted]
        attempts = 0
        while len(children) < settings.population and attempts < 1000:
            attempts += 1
            a, b = self._tournament(ranked, rng), self._tournament(ranked, rng)
            child = mutate(crossover(a, b, rng), rng, settings.mutation_rate)
            if self._valid(child) and key(child) not in {key(c) for c in children}:
                children.append(child)
        self.state.update(population=children, generation=self.state["generation"] + 1, rng=_dump_rng(rng))

    def _tournament(self, ranked: list[dict], rng: random.Random) -> dict:
        contenders = rng.sample(ranked, min(self.settings.tournament, len(ranked)))
        return max(contenders, key=lambda e: e["fitness"])["genes"]

    @staticmethod
    def _valid(genes: dict) -> bool:
        from pipeline.render.config import RenderConfigError

        try:
            to_config(genes)
            return True
        except RenderConfigError:
            return False

    # -- outputs ------------------------------------------------------------------
    def _publish(self) -> dict:
        best = max(self.state["evaluations"].values(), key=lambda e: e["fitness"])
        config = to_config(best["genes"]).to_glyph_dict()
        result = {"evaluator": self.evaluator.name, "fitness_definition": self.fitness.describe(),
                  "best": {k: best[k] for k in ("accuracy", "compression_ratio", "fitness", "generation", "genes")},
                  "evaluations": len(self.state["evaluations"]), "evaluated_this_run": self.state["evaluated_now"],
                  "generations": len(self.state["history"])}
        self.store.write_text(storage.join(self.out_uri, "best_config.json"), json.dumps(config, indent=2) + "\n")
        self.store.write_text(storage.join(self.out_uri, "best.json"), json.dumps(result, indent=2) + "\n")
        self.store.write_bytes(storage.join(self.out_uri, "search.png"), plot_history(self.state["history"]))
        return result


def plot_history(history: list[dict]) -> bytes:
    """Accuracy against compression, one colour per generation, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    colours = plt.cm.viridis([i / max(len(history) - 1, 1) for i in range(len(history))])
    for entry, colour in zip(history, colours):
        if entry["points"]:
            xs, ys = zip(*[(ratio, accuracy) for accuracy, ratio in entry["points"]])
            axes.scatter(xs, ys, color=colour, label=f"gen {entry['generation']}", s=18)
    axes.set_xlabel("compression ratio (text tokens / visual tokens)")
    axes.set_ylabel("accuracy")
    axes.set_title("render-config search")
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    plt.close(figure)
    return out.getvalue()


def _dump_rng(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _load_rng(saved: list) -> random.Random:
    rng = random.Random()
    rng.setstate((saved[0], tuple(saved[1]), saved[2]))
    return rng
