"""Scoring a render config on validation items: task accuracy and compression ratio.

- OfflineEvaluator (the embedded default, no endpoint needed): legibility proxy.
  Tesseract reads each rendered page; accuracy = 1 - character error rate
  against the page's exact target text.
- VlmEvaluator: the pages go to a VLM through the OpenAI chat API with the
  question as text, the way the Glyph model is served by vLLM; accuracy is
  the item's metric (exact match, F1, contains) against its answers.

Both report compression = text tokens / visual tokens over the same items, and
name themselves in every result, so a score always says where it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.evaluate.client import ChatClient, ChatError, image_part
from pipeline.evaluate.scoring import character_error_rate, get_scorer
from pipeline.render.config import RenderConfig
from pipeline.render.document import Renderer
from pipeline.render.tokens import TextTokenizer


@dataclass
class Item:
    id: str
    context: str
    question: str = ""
    answers: list[str] = field(default_factory=list)
    task: str = "default"
    metric: str = "f1"


def load_items(path: str | Path) -> list[Item]:
    """Validation/benchmark items from JSONL (a local path or s3:// URI): context, question, answers."""
    from pipeline import storage

    items = []
    text = storage.get_storage(str(path)).read_text(str(path))
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            answers = raw.get("answers", raw.get("answer", []))
            items.append(Item(id=str(raw.get("id", number)), context=raw["context"],
                              question=raw.get("question", ""),
                              answers=[answers] if isinstance(answers, str) else list(answers),
                              task=raw.get("task", "default"), metric=raw.get("metric", "f1")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}:{number}: not a valid item ({type(err).__name__}: {err})") from None
    if not items:
        raise ValueError(f"{path}: no items")
    return items


@dataclass
class Score:
    evaluator: str
    accuracy: float
    compression_ratio: float
    text_tokens: int
    visual_tokens: int
    pages: int
    failures: list[dict] = field(default_factory=list)  # a few worst cases, for the critic

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("evaluator", "accuracy", "compression_ratio", "text_tokens",
                                              "visual_tokens", "pages", "failures")}


class OfflineEvaluator:
    name = "offline-ocr (1 - tesseract CER on rendered pages)"

    def __init__(self, max_pages_per_item: int = 2, tokenizer: TextTokenizer | None = None):
        self.max_pages = max_pages_per_item
        self.tokenizer = tokenizer or TextTokenizer()

    def evaluate(self, cfg: RenderConfig, items: list[Item]) -> Score:
        import pytesseract
        from PIL import Image

        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        renderer = Renderer(cfg, "skia", self.tokenizer)
        errors, failures = [], []
        text_tokens = visual_tokens = pages = 0
        for item in items:
            document = renderer.render(item.context)
            text_tokens += document.text_tokens
            visual_tokens += document.visual_tokens
            pages += len(document.pages)
            for page in document.pages[: self.max_pages]:
                read = pytesseract.image_to_string(Image.fromarray(page.pixels), config="--psm 6")
                cer = min(1.0, character_error_rate(read, page.text))
                errors.append(cer)
                failures.append({"item": item.id, "page": page.index, "cer": cer, "read": read[:120],
                                 "truth": page.text[:120]})
        failures = sorted(failures, key=lambda f: -f["cer"])[:3]
        accuracy = 1.0 - sum(errors) / len(errors) if errors else 0.0
        return Score(self.name, round(accuracy, 4), _ratio(text_tokens, visual_tokens), text_tokens,
                     visual_tokens, pages, failures)


class VlmEvaluator:
    def __init__(self, client: ChatClient, tokenizer: TextTokenizer | None = None, max_tokens: int = 256):
        self.client, self.max_tokens = client, max_tokens
        self.tokenizer = tokenizer or TextTokenizer()
        self.name = f"vlm ({client.model} at {client.url})"

    def answer(self, renderer: Renderer, item: Item) -> tuple[str, object]:
        document = renderer.render(item.context)
        content = [image_part(page.png()) for page in document.pages]
        content.append({"type": "text", "text": item.question})
        try:
            reply = self.client.chat([{"role": "user", "content": content}], max_tokens=self.max_tokens)["text"]
        except ChatError as err:
            reply = f"<error: {err}>"
        return reply, document

    def evaluate(self, cfg: RenderConfig, items: list[Item]) -> Score:
        renderer = Renderer(cfg, "skia", self.tokenizer)
        scores, failures = [], []
        text_tokens = visual_tokens = pages = 0
        for item in items:
            reply, document = self.answer(renderer, item)
            score = get_scorer(item.metric)(reply, item.answers)
            scores.append(score)
            text_tokens += document.text_tokens
            visual_tokens += document.visual_tokens
            pages += len(document.pages)
            if score < 1:
                failures.append({"item": item.id, "question": item.question[:120], "answer": reply[:120],
                                 "expected": item.answers[:2], "score": score})
        accuracy = sum(scores) / len(scores) if scores else 0.0
        return Score(self.name, round(accuracy, 4), _ratio(text_tokens, visual_tokens), text_tokens,
                     visual_tokens, pages, failures[:3])


def _ratio(text_tokens: int, visual_tokens: int) -> float:
    return round(text_tokens / visual_tokens, 4) if visual_tokens else 0.0
