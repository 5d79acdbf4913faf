"""Task builders: consecutive pages of a unit -> pre-training conversations that fill the context.

- ocr: pages in, their exact text out;
- interleaved: pages alternate between image and text, predict the next page's text;
- generation: pages in, the next page's text out.

A sample takes as many consecutive pages as fit in `max_length` tokens (and at most
`max_pages`), counted from each page's image size and text, so a long document fills
a 128K context and nothing is decoded to decide it. Which task a window becomes is drawn
from the mixture weights by a seeded hash of its first page's key: a re-run or a resumed
run builds the same samples. Page text is document text: a string in it that looks like
a special token stays text.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from training.data.chat import Conversation, Image, Text, Turn
from training.errors import UsageError

OCR_PROMPT = "Read all the text in the image(s)."
GENERATION_PROMPT = "Continue the text."
INTERLEAVED_PROMPT = "Continue the document."
TASKS = ("ocr", "interleaved", "generation")


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


def conversation(task: str, parts: list, target: str, key: str, instruction: str) -> Conversation:
    """One user turn (pages, then the instruction), one trained assistant turn (the exact target text)."""
    user = Turn("user", [*parts, Text(instruction)])
    return Conversation([user, Turn("assistant", [Text(target, literal=True)], train=True)], key=key, task=task)


class TaskBuilder:
    def __init__(self, weights: dict[str, float], max_pages: int = 0, seed: int = 0):
        unknown = set(weights) - set(TASKS)
        if unknown or not weights or sum(weights.values()) <= 0 or min(weights.values()) < 0:
            raise UsageError(f"tasks: non-negative weights over {', '.join(TASKS)}; got {weights}")
        self.names, self.weights = list(weights), list(weights.values())
        self.max_pages, self.seed = max_pages, seed

    def build(self, pages: list[dict], costs: "PageCosts") -> Iterator[Conversation]:
        """Conversations from one unit's pages, each window as long as max_length allows."""
        start = 0
        while start < len(pages):
            key = pages[start]["__key__"]
            task = random.Random(f"{self.seed}:{key}").choices(self.names, self.weights)[0]
            if task != "ocr" and start + 1 >= len(pages):
                task = "ocr"  # nothing to continue into
            end = self._window_end(task, pages, start, costs)
            yield getattr(self, f"_{task}")(pages[start:end], pages[end] if task != "ocr" else None, key)
            start = end

    def _window_end(self, task: str, pages: list[dict], start: int, costs: "PageCosts") -> int:
        """The first page after the window: at least one page, then as many as fit."""
        budget = costs.max_length - costs.overhead
        limit = len(pages) if task == "ocr" else len(pages) - 1
        if self.max_pages:
            limit = min(limit, start + self.max_pages)
        end, used = start + 1, 0
        for index in range(start, limit):
            as_text = task == "interleaved" and (index - start) % 2 == 1
            used += costs.text(pages[index]) if as_text else costs.image(pages[index])
            if task == "ocr":
                used += costs.text(pages[index])
            target = costs.text(pages[index + 1]) if task != "ocr" else 0
            if used + target > budget and index > start:
                break
            end = index + 1
        return end

    def _ocr(self, window: list[dict], _next, key: str) -> Conversation:
        return conversation("ocr", [Image(p["png"]) for p in window], "".join(p["txt"] for p in window), key,
                            OCR_PROMPT)

    def _generation(self, window: list[dict], target: dict, key: str) -> Conversation:
        return conversation("generation", [Image(p["png"]) for p in window], target["txt"], key, GENERATION_PROMPT)

    def _interleaved(self, window: list[dict], target: dict, key: str) -> Conversation:
        parts = [Image(p["png"]) if i % 2 == 0 else Text(p["txt"], literal=True) for i, p in enumerate(window)]
        return conversation("interleaved", parts, target["txt"], key, INTERLEAVED_PROMPT)


class PageCosts:
    """Tokens a page takes as an image or as text, and the fixed template overhead, for one encoder."""

    def __init__(self, encoder, max_length: int):
        self.encoder, self.max_length = encoder, max_length
        longest = max(OCR_PROMPT, GENERATION_PROMPT, INTERLEAVED_PROMPT, key=len)
        self.overhead = encoder.length(conversation("ocr", [], "", "", longest))

    def image(self, page: dict) -> int:
        return self.encoder.image_tokens(page["png"]) + 2  # begin and end of image

    def text(self, page: dict) -> int:
        if "_tokens" not in page:
            page["_tokens"] = len(self.encoder.text_ids(Text(page["txt"], literal=True)))
        return page["_tokens"]
