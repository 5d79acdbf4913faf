"""The LLM critic: reads the search history, proposes new candidates as JSON.

Its answers are never trusted: each proposal is repaired (clamped, unknown
values replaced) or dropped, and a failed, slow or garbled answer yields no
proposals, so the search simply falls back to mutation.
"""

from __future__ import annotations

import json
import logging
import re

from pipeline.evaluate.client import ChatClient, ChatError
from pipeline.search.space import GENES, repair

log = logging.getLogger(__name__)

PROMPT = """You are tuning how long text is rendered into page images for a vision-language model.
Goal: maximize the fitness, {fitness}.
Genes and their allowed values:
{genes}
History (best first; accuracy, compression ratio, fitness):
{history}
Worst recent failures:
{failures}
Propose {count} new candidates likely to score higher. Answer with a JSON list of objects using
exactly these gene names, and nothing else."""


def _describe_genes() -> str:
    lines = []
    for name, spec in GENES.items():
        allowed = f"integer {spec[1]}..{spec[2]}" if spec[0] == "int" else f"one of {list(spec[1])}"
        lines.append(f"- {name}: {allowed}")
    return "\n".join(lines)


class LLMCritic:
    def __init__(self, client: ChatClient):
        self.client = client

    def propose(self, evaluations: list[dict], fitness_text: str, count: int, fallback: dict) -> list[dict]:
        ranked = sorted(evaluations, key=lambda e: -e["fitness"])[:12]
        history = "\n".join(json.dumps({"genes": e["genes"], "accuracy": e["accuracy"],
                                        "compression": e["compression_ratio"], "fitness": e["fitness"]})
                            for e in ranked)
        failures = "\n".join(json.dumps(f) for e in ranked[:2] for f in e.get("failures", [])[:2]) or "none"
        prompt = PROMPT.format(fitness=fitness_text, genes=_describe_genes(), history=history,
                               failures=failures, count=count)
        try:
            reply = self.client.chat([{"role": "user", "content": prompt}], max_tokens=2048)["text"]
        except ChatError as err:
            log.warning("critic: %s; falling back to mutation", err)
            return []
        proposals = parse_proposals(reply)
        repaired = [genes for genes in (repair(p, fallback) for p in proposals) if genes is not None]
        log.info("critic: %d proposals, %d usable", len(proposals), len(repaired))
        return repaired[:count]


def parse_proposals(reply: str) -> list:
    """The JSON list in a reply (bare, fenced, or inside prose); [] if there is none.

    >>> parse_proposals('Sure! ```json\\n[{"dpi": 80}]\\n```')
    [{'dpi': 80}]
    >>> parse_proposals("no idea")
    []
    """
    for candidate in (reply, *re.findall(r"```(?:json)?\s*(.*?)```", reply, re.S),
                      *re.findall(r"\[.*\]", reply, re.S)):
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, TypeError):
            continue
        if isinstance(value, dict):
            value = value.get("candidates", [value])
        if isinstance(value, list):
            return value
    return []
