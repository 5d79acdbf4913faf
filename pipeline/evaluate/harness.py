"""`pipeline eval`: long-context items answered by a VLM reading the context as rendered pages.

The question stays text; the context becomes pages rendered with the given
config. Per task: accuracy (the item's metric), text tokens of the context,
visual tokens of its pages, and compression. Predictions and the report are
written to the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluate.client import ChatClient
from pipeline.evaluate.evaluators import Item, VlmEvaluator
from pipeline.evaluate.scoring import get_scorer
from pipeline.render.config import RenderConfig
from pipeline.render.document import Renderer


def run_eval(items: list[Item], cfg: RenderConfig, client: ChatClient, out_dir: str | Path) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluator = VlmEvaluator(client)
    renderer = Renderer(cfg, "skia", evaluator.tokenizer)
    tasks: dict[str, dict] = {}
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as predictions:
        for item in items:
            reply, document = evaluator.answer(renderer, item)
            score = get_scorer(item.metric)(reply, item.answers)
            task = tasks.setdefault(item.task, {"items": 0, "score": 0.0, "text_tokens": 0, "visual_tokens": 0,
                                                "pages": 0, "metric": item.metric})
            task["items"] += 1
            task["score"] += score
            task["text_tokens"] += document.text_tokens
            task["visual_tokens"] += document.visual_tokens
            task["pages"] += len(document.pages)
            predictions.write(json.dumps({"id": item.id, "task": item.task, "prediction": reply,
                                          "answers": item.answers, "score": score, "pages": len(document.pages),
                                          "text_tokens": document.text_tokens,
                                          "visual_tokens": document.visual_tokens}, ensure_ascii=False) + "\n")
    report = {"model": client.model, "endpoint": client.url, "config": cfg.to_glyph_dict(), "tasks": {}}
    for name, task in sorted(tasks.items()):
        report["tasks"][name] = {
            "items": task["items"], "metric": task["metric"], "accuracy": round(task["score"] / task["items"], 4),
            "text_tokens": task["text_tokens"], "visual_tokens": task["visual_tokens"], "pages": task["pages"],
            "compression_ratio": round(task["text_tokens"] / task["visual_tokens"], 4) if task["visual_tokens"]
            else 0.0}
    total = sum(t["items"] for t in tasks.values())
    report["overall_accuracy"] = round(sum(t["score"] for t in tasks.values()) / total, 4) if total else 0.0
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report
