"""Answer scoring, as in LongBench / SQuAD: normalized exact match, token F1, character error rate.

Plain functions of (prediction, answers); each task names one in SCORERS.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "，。！？；：、“”‘’（）《》")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and English articles, squeeze white space.

    >>> normalize_answer("The  Cat, sat!")
    'cat sat'
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    """Words, with each CJK character its own token (F1 on Chinese answers)."""
    return re.findall(r"[\u4e00-\u9fff]|[^\s\u4e00-\u9fff]+", normalize_answer(text))


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 if the prediction equals any answer after normalization.

    >>> exact_match("The Eiffel Tower.", ["eiffel tower"])
    1.0
    >>> exact_match("Eiffel", ["eiffel tower"])
    0.0
    """
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def f1_score(prediction: str, answers: list[str]) -> float:
    """Best token-overlap F1 over the answers.

    >>> f1_score("the tall tower", ["tower"])  # precision 1/2, recall 1/1
    0.6667
    >>> f1_score("", ["x"])
    0.0
    """
    best = 0.0
    predicted = _tokens(prediction)
    for answer in answers:
        truth = _tokens(answer)
        common = sum((Counter(predicted) & Counter(truth)).values())
        if common == 0:
            continue
        precision, recall = common / len(predicted), common / len(truth)
        best = max(best, 2 * precision * recall / (precision + recall))
    return round(best, 4)


def contains(prediction: str, answers: list[str]) -> float:
    """1.0 if any normalized answer occurs in the normalized prediction (needle retrieval).

    >>> contains("The magic number is 7481.", ["7481"])
    1.0
    """
    said = normalize_answer(prediction)
    return float(any(normalize_answer(a) in said for a in answers if normalize_answer(a)))


def character_error_rate(prediction: str, reference: str) -> float:
    """Levenshtein distance / reference length, with runs of white space folded.

    >>> character_error_rate("helo world", "hello world")
    0.0909
    """
    from rapidfuzz.distance import Levenshtein

    squash = lambda s: " ".join(s.split())  # noqa: E731
    reference = squash(reference)
    if not reference:
        return 0.0 if not squash(prediction) else 1.0
    return round(Levenshtein.distance(squash(prediction), reference) / len(reference), 4)


SCORERS = {"exact_match": exact_match, "f1": f1_score, "contains": contains}


def get_scorer(name: str):
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"metric: unknown metric {name!r}; choose one of {', '.join(SCORERS)}") from None
