"""Reward functions for GRPO: plain functions in a registry, selected by name in the config.

Each takes the group's completions and keyword arguments (the references, and
for the judge its endpoint) and returns one float per completion, as TRL's
reward functions do.
"""

from __future__ import annotations

import re

from pipeline.evaluate.scoring import exact_match, f1_score

_THINK = re.compile(r"<think>.*?</think>", re.S)


def answer_of(completion: str) -> str:
    """The answer with any thinking removed.

    >>> answer_of("<think>hmm</think> Paris")
    'Paris'
    """
    return _THINK.sub("", completion).strip()


def exact_match_reward(completions: list[str], references: list[str], **kwargs) -> list[float]:
    """1 for a normalized exact match with the reference answer.

    >>> exact_match_reward(["<think>x</think>The Paris", "Rome"], ["paris", "paris"])
    [1.0, 0.0]
    """
    return [exact_match(answer_of(c), [r]) for c, r in zip(completions, references)]


def f1_reward(completions: list[str], references: list[str], **kwargs) -> list[float]:
    """Token F1 against the reference answer.

    >>> f1_reward(["big red dog", "cat"], ["red dog", "red dog"])
    [0.8, 0.0]
    """
    return [f1_score(answer_of(c), [r]) for c, r in zip(completions, references)]


def format_reward(completions: list[str], **kwargs) -> list[float]:
    """1 for a well-formed reply: at most one closed <think> block, then a non-empty answer.

    >>> format_reward(["<think>a</think>b", "<think>a", "b", "<think>a</think>"])
    [1.0, 0.0, 1.0, 0.0]
    """
    scores = []
    for completion in completions:
        opened, closed = completion.count("<think>"), completion.count("</think>")
        scores.append(float(opened == closed <= 1 and bool(answer_of(completion))))
    return scores


def ocr_reward(completions: list[str], references: list[str], **kwargs) -> list[float]:
    """The auxiliary OCR reward: normalized Levenshtein similarity to the page's exact text.

    >>> ocr_reward(["hello world", "xyz"], ["hello world!", "abc"])
    [0.9167, 0.0]
    """
    from rapidfuzz.distance import Levenshtein

    return [round(Levenshtein.normalized_similarity(answer_of(c), r), 4) for c, r in zip(completions, references)]


def llm_judge_reward(completions: list[str], references: list[str], questions: list[str] | None = None,
                     judge=None, **kwargs) -> list[float]:
    """A judge LLM (OpenAI-compatible ChatClient) scores each answer from 0 to 10; scaled to [0, 1].

    Off by default. An unreachable judge or an answer without a number scores 0 for that completion.
    """
    from pipeline.evaluate.client import ChatError

    if judge is None:
        raise ValueError("llm_judge reward: no judge endpoint configured (judge_endpoint, judge_model)")
    scores = []
    for index, (completion, reference) in enumerate(zip(completions, references)):
        question = questions[index] if questions else ""
        prompt = (f"Question: {question}\nReference answer: {reference}\nCandidate answer: {answer_of(completion)}\n"
                  "Score the candidate from 0 (wrong) to 10 (fully correct). Reply with the number only.")
        try:
            reply = judge.chat([{"role": "user", "content": prompt}], max_tokens=8)["text"]
            number = re.search(r"\d+(?:\.\d+)?", reply)
            scores.append(min(max(float(number.group()) / 10, 0.0), 1.0) if number else 0.0)
        except ChatError:
            scores.append(0.0)
    return scores


REWARDS = {
    "exact_match": exact_match_reward,
    "f1": f1_reward,
    "format": format_reward,
    "ocr": ocr_reward,
    "llm_judge": llm_judge_reward,
}


def get_reward(name: str):
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"rewards: unknown reward {name!r}; choose from {', '.join(REWARDS)}") from None
