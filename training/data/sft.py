"""SFT data: chat-format JSONL (the format ms-swift and TRL read), long contexts as rendered pages.

A record: {"messages": [{"role": "user", "content": "<image>...question"}, {"role": "assistant",
"content": "answer"}], "images": ["page-1.png", ...]} with one <image> per page (pre-rendered), or
with "context": "long text" instead of images, rendered on the fly with the render config and put
before the first user message's text. The last assistant message is the target (thinking-style
"<think>...</think>answer" included); everything before it is prompt, masked from the loss. With
probability ocr_ratio a record's context pages become an auxiliary OCR sample instead.
"""

from __future__ import annotations

import json
import logging
import random

import torch
from PIL import Image

from pipeline import storage
from training.data.encode import PromptTooLong, encode
from training.data.tasks import OCR_PROMPT, TaskSample

log = logging.getLogger(__name__)


class SftStream(torch.utils.data.IterableDataset):
    def __init__(self, uri: str, processor, render_config, max_length: int, ocr_ratio: float = 0.0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, skip: int = 0):
        super().__init__()
        from pipeline.render.document import Renderer

        self.uri, self.processor, self.max_length = uri, processor, max_length
        self.renderer = Renderer(render_config)
        self.ocr_ratio, self.seed, self.rank, self.world_size, self.skip = ocr_ratio, seed, rank, world_size, skip

    def records(self):
        text = storage.get_storage(self.uri).read_text(self.uri)
        for number, line in enumerate(text.splitlines(), start=1):
            if (number - 1) % self.world_size != self.rank or not line.strip():
                continue
            try:
                record = json.loads(line)
                if record["messages"][-1]["role"] != "assistant":
                    raise ValueError("the last message must be the assistant's answer")
                yield number, record
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as err:
                log.warning("skipping SFT record %s:%d: %s", self.uri, number, err)

    def sample(self, number: int, record: dict) -> TaskSample:
        pages = self._pages(record)
        if pages and random.Random(f"{self.seed}:{number}").random() < self.ocr_ratio:
            page = pages[0]
            return TaskSample("ocr", [page[0]], page[1], f"{number}", OCR_PROMPT)
        *history, answer = record["messages"]
        parts, images = [], iter([image for image, _ in pages])
        for message in history:
            parts.append(f"<|{message['role']}|>")
            pieces = str(message["content"]).split("<image>")
            for index, piece in enumerate(pieces):
                if index:
                    parts.append(next(images))
                if piece:
                    parts.append(piece)
            if "context" in record and message is history[0]:
                parts[1:1] = [image for image, _ in pages]
        return TaskSample("sft", parts[1:] if parts and parts[0] == "<|user|>" else parts, answer["content"],
                          f"{number}")

    def _pages(self, record: dict) -> list[tuple]:
        if "context" in record:
            document = self.renderer.render(record["context"])
            return [(Image.fromarray(p.pixels).convert("RGB"), p.text) for p in document.pages]
        return [(Image.open(_local(path)).convert("RGB"), "") for path in record.get("images", [])]

    def samples(self):
        """(record number, TaskSample, reference answer) for every usable record, once."""
        for number, record in self.records():
            try:
                sample = self.sample(number, record)
            except (StopIteration, OSError) as err:
                log.warning("skipping SFT record %d: %s", number, err)
                continue
            yield number, sample, sample.target

    def __iter__(self):
        given = 0
        while True:
            produced = False
            for number, record in self.records():
                try:
                    sample = self.sample(number, record)
                    encoded = encode(sample, self.processor, self.max_length)
                except (PromptTooLong, StopIteration, OSError) as err:
                    log.warning("skipping SFT record %d: %s", number, err)
                    continue
                produced = True
                given += 1
                if given > self.skip:
                    yield {**encoded, "task": sample.task}
            if not produced:
                raise RuntimeError(f"no trainable SFT records in {self.uri}")


def _local(path: str):
    if storage.is_s3(path):
        import io

        return io.BytesIO(storage.get_storage(path).read_bytes(path))
    return path
