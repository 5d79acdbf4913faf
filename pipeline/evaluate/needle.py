"""Needle-in-a-haystack items over real long text, at set context lengths and depths.

A sentence with a random magic number (the needle) is placed at a depth (0 =
start, 1 = end) of a haystack cut to a length in characters, at a sentence
boundary; the question asks for the number. Seeded: same arguments, same items.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

NEEDLE = "The special magic number for {city} is: {number}."
QUESTION = "What is the special magic number for {city} mentioned in the provided text? Answer with the number."
CITIES = ("Lisbon", "Nairobi", "Osaka", "Quito", "Tbilisi", "Reykjavik", "Hanoi", "Lima", "Tallinn", "Accra")


def load_haystack(folder: str | Path) -> str:
    """Every .txt file in the folder, in name order, joined with blank lines."""
    files = sorted(Path(folder).glob("*.txt"))
    if not files:
        raise ValueError(f"haystack: no .txt files in {folder}")
    return "\n\n".join(p.read_text(encoding="utf-8") for p in files)


def make_items(haystack: str, lengths: list[int], depths: list[float], seed: int = 0) -> list[dict]:
    """One item per (length, depth).

    >>> items = make_items("One. Two. Three. Four. Five. " * 50, [200], [0.0, 1.0], seed=1)
    >>> [it["context"].count("special magic number") for it in items]
    [1, 1]
    >>> items[0]["context"].startswith("The special magic number")
    True
    """
    rng = random.Random(seed)
    items = []
    for length in lengths:
        if length > len(haystack):
            raise ValueError(f"lengths: {length} characters asked, the haystack has {len(haystack)}")
        for depth in depths:
            if not 0.0 <= depth <= 1.0:
                raise ValueError(f"depths: must be within [0, 1], got {depth}")
            city, number = rng.choice(CITIES), str(rng.randint(1_000_000, 9_999_999))
            needle = NEEDLE.format(city=city, number=number)
            body = haystack[: max(0, length - len(needle) - 1)]
            at = _sentence_boundary(body, int(len(body) * depth))
            context = (body[:at] + (" " if at else "") + needle + " " + body[at:]).strip()
            items.append({"id": f"niah-{length}-{depth:.2f}", "task": f"niah-{length}", "context": context,
                          "question": QUESTION.format(city=city), "answers": [number], "metric": "contains",
                          "depth": depth, "length": length})
    return items


def _sentence_boundary(text: str, position: int) -> int:
    """The end of the sentence at or before position (0 if none)."""
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*\s", text[:position + 1])]
    return ends[-1] if ends else 0
