"""SFT data in the conventions users already have, streamed from JSONL or Parquet, local or S3.

Record shapes (one per line or row):
- ms-swift: `{"messages": [{"role": "system"|"user"|"assistant", "content": "...<image>..."}],
  "images": [path | URI | {"path": ...} | {"bytes": ...}]}`, one `<image>` tag per image;
- TRL conversational: `messages` (or `prompt` + `completion`) whose content is a string or typed
  parts (`{"type": "text", "text": ...}`, `{"type": "image"}`), with `images` (or `image`);
- ours: `{"messages": [...], "context": "long text"}`: the context is rendered into pages on the
  fly and put before the first user message's text.

Every assistant turn is trained (or only the last, with `last_turn_only`). Image paths are
resolved against the data file's folder, then as given. With probability `ocr_ratio` a record
whose pages were rendered here (their text is known) also yields an OCR sample of one of its
pages, a different draw each epoch. A record that cannot be used is skipped, logged with its
file, line and reason, and counted.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from pathlib import Path

from pipeline import storage
from training.data.chat import ChatEncoder, Conversation, Image, PromptTooLong, Text, Turn
from training.data.stream import DataError, ReaderStream
from training.data.tasks import OCR_PROMPT, conversation

log = logging.getLogger(__name__)
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".parquet")
ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record that cannot be used; the message says why, `reason` is what it is counted under."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def data_files(uri: str) -> list[str]:
    """The data files at uri: one file, a comma-separated list, or every JSONL/Parquet file under a folder."""
    if "," in uri:
        return [f for part in uri.split(",") if part.strip() for f in data_files(part.strip())]
    store = storage.get_storage(uri)
    if uri.endswith(SUFFIXES):
        if not store.exists(uri):
            raise DataError(f"--data {uri}: no such file")
        return [uri]
    files = sorted(o.uri for o in store.list(uri) if o.uri.endswith(SUFFIXES))
    if not files:
        raise DataError(f"--data {uri}: no .jsonl or .parquet files there")
    return files


def iter_records(uri: str):
    """(line or row number, record or the reason it is unreadable) for one file, streamed."""
    store = storage.get_storage(uri)
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        source = store.open_read(uri) if storage.is_s3(uri) else str(storage.LocalStorage.path(uri))
        source = io.BytesIO(source.read()) if hasattr(source, "read") else source
        number = 0
        for batch in pq.ParquetFile(source).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                number += 1
                yield number, row
        return
    stream = store.open_read(uri)
    if uri.endswith(".gz"):
        import gzip

        stream = gzip.open(stream)
    with stream:
        for number, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, RecordError(f"not JSON: {err}", "not JSON")


class RecordParser:
    """One record -> Conversation, in any of the shapes above."""

    def __init__(self, renderer, last_turn_only: bool = False):
        self.renderer, self.last_turn_only = renderer, last_turn_only

    def parse(self, record, folder: str, render: bool = True) -> tuple[Conversation, list]:
        """(conversation, rendered pages as (image, text)); RecordError when the record cannot be used.

        render=False checks the record as fully but leaves a context unrendered (a resumed run's skip).
        """
        if isinstance(record, Exception):
            raise record
        if not isinstance(record, dict):
            raise RecordError("not a JSON object")
        if "messages" in record:
            messages = list(record["messages"])
        elif "prompt" in record and "completion" in record:
            messages = _as_messages(record["prompt"], "user") + _as_messages(record["completion"], "assistant")
        else:
            raise RecordError(f"unknown record shape (keys {sorted(record)}): expected messages, or prompt and "
                              "completion", "unknown record shape")
        images = _image_list(record)
        if record.get("context") and images:
            raise RecordError("give either context (rendered here) or images, not both")
        pages = []
        if record.get("context") and render:
            document = self.renderer.render(str(record["context"]))
            from PIL import Image as PILImage

            pages = [(PILImage.fromarray(p.pixels).convert("RGB"), p.text) for p in document.pages]
        turns = self._turns(messages, images, folder, [image for image, _ in pages], bool(record.get("context")))
        return Conversation(turns, task="sft"), pages

    def _turns(self, messages: list, images: list, folder: str, context_pages: list, context: bool) -> list[Turn]:
        if not messages or not all(isinstance(m, dict) for m in messages):
            raise RecordError("messages must be a non-empty list of objects")
        opened = iter([Image(_open_image(source, folder)) for source in images])
        tags, turns = 0, []
        for message in messages:
            role = message.get("role")
            if role not in ROLES:
                raise RecordError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", "unknown role")
            parts = []
            for part in _parts(message.get("content")):
                if part == "<image>":
                    tags += 1
                    parts.append(next(opened, None))
                else:
                    parts.append(Text(part))
            if None in parts:
                raise RecordError(f"more image tags than images ({len(images)})", "image tags and images differ")
            turns.append(Turn(role, [p for p in parts if not (isinstance(p, Text) and not p.text)]))
        if tags != len(images):
            raise RecordError(f"{tags} image tags for {len(images)} images", "image tags and images differ")
        if context:
            first = next((t for t in turns if t.role == "user"), None)
            if first is None:
                raise RecordError("a context needs a user message to go with")
            first.parts[:0] = [Image(page) for page in context_pages]
        if turns[-1].role != "assistant":
            raise RecordError("the last message must be the assistant's answer")
        assistants = [t for t in turns if t.role == "assistant"]
        for turn in assistants[-1:] if self.last_turn_only else assistants:
            turn.train = True
        if any(isinstance(p, Image) for t in turns if t.role != "user" for p in t.parts):
            raise RecordError("images may only be in user messages")
        return turns


def folder_of(where: str) -> str:
    """The folder of a record's file ("path:line"), where its relative image paths are resolved."""
    return "" if storage.is_s3(where) else str(Path(where.rsplit(":", 1)[0]).parent)


def _as_messages(value, role: str) -> list:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise RecordError(f"{role} side must be a string or a list of messages")


def _image_list(record: dict) -> list:
    images = record.get("images", record.get("image"))
    if images is None:
        return []
    return images if isinstance(images, list) else [images]


def _parts(content) -> list:
    """Message content -> text pieces and "<image>" markers, in order (strings: ms-swift tags; lists: TRL parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [piece for piece in re.split(r"(<image>)", content) if piece]
    if isinstance(content, list):
        out = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                out.append(str(part.get("text", "")))
            elif kind == "image":
                out.append("<image>")
            else:
                raise RecordError(f"unknown content part {part!r}", "unknown content part")
        return out
    raise RecordError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _open_image(source, folder: str):
    """A path, file:// or s3:// URI, {"path": ...} or {"bytes": ...} -> a lazily opened PIL image."""
    from PIL import Image as PILImage, UnidentifiedImageError

    if isinstance(source, dict):
        if source.get("bytes"):
            return PILImage.open(io.BytesIO(source["bytes"]))
        source = source.get("path") or source.get("url")
    if not isinstance(source, str) or not source:
        raise RecordError(f"unusable image reference {source!r}", "unusable image reference")
    uri = source[len("file://"):] if source.startswith("file://") else source
    try:
        if storage.is_s3(uri):
            return PILImage.open(io.BytesIO(storage.get_storage(uri).read_bytes(uri)))
        for candidate in (Path(folder) / uri, Path(uri)):
            if candidate.is_file():
                return PILImage.open(candidate)
    except (OSError, UnidentifiedImageError) as err:
        raise RecordError(f"image {source}: {err}", "unreadable image") from None
    raise RecordError(f"image {source} does not exist", "missing image")


class SftStream(ReaderStream):
    """Encoded SFT samples (and auxiliary OCR samples), records split across ranks and workers."""

    def __init__(self, uri: str, processor, render_config, max_length: int, ocr_ratio: float = 0.0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, start: dict | None = None, epochs: int | None = None,
                 last_turn_only: bool = False):
        super().__init__(rank, world_size, start, epochs)
        from pipeline.render.document import Renderer

        self.uri, self.processor, self.max_length = uri, processor, max_length
        self.files = data_files(uri)
        self.parser = RecordParser(Renderer(render_config), last_turn_only)
        self.ocr_ratio, self.seed = ocr_ratio, seed

    def records(self, slot: int = 0, slots: int = 1):
        """(where, record) for this reader's records: every slots-th record of all files, in order."""
        index = assigned = 0
        for uri in self.files:
            for number, record in iter_records(uri):
                index += 1
                if (index - 1) % slots == slot:
                    assigned += 1
                    yield f"{uri}:{number}", record
        if index and not assigned:  # fewer records than readers: this one repeats a record rather than idle
            yield from self.records(slot % index, index)

    def conversations(self, slot: int = 0, slots: int = 1, epoch: int = 0, skip_to: int = 0):
        """(where, conversation) for each sample this reader plans; unusable records are skipped and counted.

        The first skip_to samples (a resumed run's) come as (where, None): counted, not rendered.
        """
        planned = 0
        for where, record in self.records(slot, slots):
            folder = folder_of(where)
            try:
                conv, pages = self.parser.parse(record, folder, render=planned + 1 > skip_to)
            except RecordError as err:
                self.skip(err.reason, f"SFT record {where}", err)
                continue
            conv.key = where
            planned += 1
            yield where, conv if planned > skip_to else None
            draw = random.Random(f"{self.seed}:{where}:{epoch}")
            if record.get("context") and draw.random() < self.ocr_ratio:
                planned += 1
                if planned <= skip_to:
                    yield where, None
                    continue
                pages = pages or self.parser.parse(record, folder)[1]
                image, text = pages[draw.randrange(len(pages))]
                yield where, conversation("ocr", [Image(image)], text, f"{where}#ocr", OCR_PROMPT)

    def __iter__(self):
        slot, slots = self.slot()
        encoder = ChatEncoder(self.processor)
        planned, skip_to = 0, self.start.get(slot, 0)
        for epoch in self.epochs_forever():
            given = 0
            for where, conv in self.conversations(slot, slots, epoch, skip_to - planned):
                planned += 1
                if conv is None:  # a resumed run's already-trained sample
                    given += 1
                    continue
                try:
                    encoded = encoder.encode(conv, self.max_length)
                except PromptTooLong as err:
                    self.skip("prompt too long", f"SFT record {where}", err)
                    continue
                except OSError as err:
                    self.skip("undecodable image", f"SFT record {where}", err)
                    continue
                given += 1
                yield {**encoded, "task": conv.task, "reader": slot, "position": planned}
            if not given:
                raise DataError(f"no trainable SFT records in {self.uri} (skipped: {dict(self.skipped) or 'none'})")
            log.info("SFT reader %d finished epoch %d: %d samples, skipped %s", slot, epoch + 1, given,
                     dict(self.skipped) or "none")
