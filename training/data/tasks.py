"""Task builders: consecutive pages of a unit -> training samples.

A sample is a prompt of parts (a page image, or text) and a target text:
- ocr: one or more pages in, their exact text out;
- interleaved: pages alternate between image and text, predict the next page's text;
- generation: the first pages of a unit in, the continuation's text out.
Which task a group of pages becomes is drawn from the mixture weights by a seeded hash of
its first page's key, so a re-run (or a resumed run) builds the same samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Iterator

OCR_PROMPT = "Read all the text in the image(s)."
GENERATION_PROMPT = "Continue the text."
INTERLEAVED_PROMPT = "Continue the document."


@dataclass
class TaskSample:
    task: str
    parts: list  # PIL images and str, in order
    target: str
    key: str
    instruction: str = ""
    meta: dict = field(default_factory=dict)


def group_units(samples: Iterable[dict]) -> Iterator[list[dict]]:
    """Consecutive samples of one unit (source_id), in page order."""
    group: list[dict] = []
    for sample in samples:
        if group and sample["json"]["source_id"] != group[-1]["json"]["source_id"]:
            yield group
            group = []
        group.append(sample)
    if group:
        yield group


class TaskBuilder:
    def __init__(self, weights: dict[str, float], max_pages: int = 2, seed: int = 0):
        unknown = set(weights) - {"ocr", "interleaved", "generation"}
        if unknown or not weights or sum(weights.values()) <= 0:
            raise ValueError(f"tasks: weights over ocr, interleaved, generation; got {weights}")
        self.names, self.weights = list(weights), list(weights.values())
        self.max_pages, self.seed = max(1, max_pages), seed

    def build(self, pages: list[dict]) -> Iterator[TaskSample]:
        """Samples from one unit's pages, in windows of up to max_pages (+1 for the target page)."""
        step = self.max_pages
        for start in range(0, len(pages), step):
            window = pages[start:start + step + 1]
            key = window[0]["__key__"]
            task = random.Random(f"{self.seed}:{key}").choices(self.names, self.weights)[0]
            if task != "ocr" and len(window) < 2:
                task = "ocr"  # nothing to continue into
            yield getattr(self, f"_{task}")(window, key)

    def _ocr(self, window: list[dict], key: str) -> TaskSample:
        pages = window[: self.max_pages]
        return TaskSample("ocr", [p["png"] for p in pages], "".join(p["txt"] for p in pages), key, OCR_PROMPT)

    def _generation(self, window: list[dict], key: str) -> TaskSample:
        context, target = window[:-1], window[-1]
        return TaskSample("generation", [p["png"] for p in context], target["txt"], key, GENERATION_PROMPT)

    def _interleaved(self, window: list[dict], key: str) -> TaskSample:
        context, target = window[:-1], window[-1]
        parts = [p["png"] if i % 2 == 0 else p["txt"] for i, p in enumerate(context)]
        return TaskSample("interleaved", parts, target["txt"], key, INTERLEAVED_PROMPT)
