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
                     judge=None, failures: list | None = None, **kwargs) -> list[float]:
    """A judge LLM (OpenAI-compatible ChatClient) scores each answer from 0 to 10; scaled to [0, 1].

    Off by default. An unreachable judge or an answer without a number scores 0 for that completion,
    and is appended to `failures` when given.
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
            if not number and failures is not None:
                failures.append(f"no number in {reply[:40]!r}")
        except ChatError as err:
            scores.append(0.0)
            if failures is not None:
                failures.append(str(err))
    return scores


REWARDS = {
    "exact_match": exact_match_reward,
    "f1": f1_reward,
    "format": format_reward,
    "ocr": ocr_reward,
    "llm_judge": llm_judge_reward,
}


def get_reward(name: str):
    from training.errors import UsageError

    try:
        return REWARDS[name]
    except KeyError:
        raise UsageError(f"rewards: unknown reward {name!r}; choose from {', '.join(REWARDS)}") from None


def completion_texts(completion_ids: list, tokenizer, drop: set[int]) -> list[str]:
    """What rewards read: each completion decoded with its tags (<think>) intact, stop and padding tokens removed.

    TRL's own `completions` are decoded with special tokens skipped, which would drop <think> when the
    tokenizer marks it special; the ids are decoded here instead.
    """
    return [tokenizer.decode([t for t in ids if t not in drop], skip_special_tokens=False) for ids in completion_ids]


def trl_rewards(weights: dict[str, float], tokenizer, drop: set[int], judge=None) -> tuple[list, list[float]]:
    """Our reward functions in TRL's signature, with their weights, plus the OCR reward for OCR prompts.

    A prompt's `task` column says which apply: an OCR prompt is scored by the OCR reward alone, any other
    by the configured rewards (a reward that does not apply returns None, which TRL leaves out).
    """
    names = list(weights)
    functions, values = [], []
    for name in names:
        functions.append(_adapted(name, get_reward(name), tokenizer, drop, judge, ocr_rows=False))
        values.append(float(weights[name]))
    functions.append(_adapted("ocr_aux", ocr_reward, tokenizer, drop, judge, ocr_rows=True))
    values.append(1.0)
    return functions, values


def _adapted(name: str, function, tokenizer, drop: set[int], judge, ocr_rows: bool):
    def reward(prompts=None, completions=None, completion_ids=None, answer=None, task=None, question=None,
               log_metric=None, **kwargs) -> list:
        texts = completion_texts(completion_ids, tokenizer, drop)
        applies = [(t == "ocr") == ocr_rows for t in task]
        failures: list = []
        scores = function(texts, references=list(answer), questions=list(question), judge=judge, failures=failures)
        if failures and log_metric is not None:
            log_metric(f"rewards/{name}/failures", float(len(failures)))
        return [float(v) if ok else None for v, ok in zip(scores, applies)]

    reward.__name__ = name
    return reward
