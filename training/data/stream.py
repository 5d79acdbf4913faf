"""Streaming pre-training samples from local or S3 shards, split across ranks and DataLoader workers.

Each reader (one DataLoader worker of one rank) reads its own shards (round robin over
the sorted shard list) and loops over them epoch after epoch. Samples are planned from
each page's text and image size, and only a planned sample that is given out is decoded
and run through the image processor. Every sample carries its reader and position (the
samples that reader has planned so far), which the trainer saves with each checkpoint:
a resumed run plans past that many samples without decoding any of them. Bad tar
members and pages that cannot be used are logged with their reason and skipped.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter

import torch

from pipeline.corpus.reader import read_shards, shard_uris, skip_bad_sample
from training.data.chat import ChatEncoder, PromptTooLong
from training.data.tasks import PageCosts, TaskBuilder, group_units
from training.errors import UsageError

log = logging.getLogger(__name__)


class DataError(UsageError):
    """Training data that cannot be used at all: a clear message, no traceback."""


def reader_slot(rank: int, world_size: int, rotation: int = 0) -> tuple[int, int]:
    """(this reader's index, number of readers) over all ranks and DataLoader workers.

    A DataLoader takes batches from its workers in turn, always starting with worker 0; a resumed
    run whose next batch is due from worker k rotates the readers by k, so the order is unchanged.
    """
    info = torch.utils.data.get_worker_info()
    workers, worker = (info.num_workers, info.id) if info else (1, 0)
    return rank * workers + (worker + rotation) % workers, world_size * workers


class ReaderStream(torch.utils.data.IterableDataset):
    """What the page and SFT streams share: reader slots, start positions, skip counters."""

    def __init__(self, rank: int = 0, world_size: int = 1, start: dict | None = None, epochs: int | None = None):
        """start: a checkpoint's {"positions": {reader: samples planned}, "batches": batches consumed}."""
        super().__init__()
        self.rank, self.world_size, self.epochs = rank, world_size, epochs
        start = start or {}
        self.start = {int(k): int(v) for k, v in start.get("positions", {}).items()}
        self.batches = int(start.get("batches", 0))
        self.skipped: Counter = Counter()

    def slot(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        return reader_slot(self.rank, self.world_size, self.batches % (info.num_workers if info else 1))

    def skip(self, reason: str, where: str, err: Exception | str = "") -> None:
        self.skipped[reason] += 1
        log.warning("skipping %s: %s%s", where, reason, f" ({err})" if err else "")

    def epochs_forever(self):
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            yield epoch
            epoch += 1


class PageTaskStream(ReaderStream):
    def __init__(self, uri: str, processor, tasks: TaskBuilder, max_length: int, rank: int = 0,
                 world_size: int = 1, start: dict | None = None, epochs: int | None = None,
                 shuffle_buffer: int = 0, seed: int = 0):
        super().__init__(rank, world_size, start, epochs)
        self.uri, self.processor, self.tasks, self.max_length = uri, processor, tasks, max_length
        self.shuffle_buffer, self.seed = shuffle_buffer, seed

    def my_part(self, slot: int, slots: int) -> tuple[list[str], int, int]:
        """(this reader's shards, units to take: every n-th, starting at the i-th).

        With at least as many shards as readers, each reader has shards of its own. With fewer,
        the readers that share a shard take turns over its units, so no sample is read twice.
        """
        shards = shard_uris(self.uri)
        if not shards:
            raise DataError(f"no shards at {self.uri}")
        if len(shards) >= slots:
            return shards[slot::slots], 1, 0
        sharing = len(range(slot % len(shards), slots, len(shards)))
        return [shards[slot % len(shards)]], sharing, slot // len(shards)

    def __iter__(self):
        slot, slots = self.slot()
        encoder = ChatEncoder(self.processor)
        costs = PageCosts(encoder, self.max_length)
        part, planned = self.my_part(slot, slots), 0
        skip_to = self.start.get(slot, 0)
        for epoch in self.epochs_forever():
            given = 0
            for conversation in self._shuffled(self._plans(part, costs), epoch):
                planned += 1
                if planned <= skip_to:  # a resumed run: planned, never decoded
                    given += 1
                    continue
                try:
                    encoded = encoder.encode(conversation, self.max_length)
                except PromptTooLong as err:
                    self.skip("prompt too long", f"sample {conversation.key}", err)
                    continue
                except (OSError, ValueError) as err:
                    self.skip("undecodable page", f"sample {conversation.key}", err)
                    continue
                given += 1
                yield {**encoded, "task": conversation.task, "reader": slot, "position": planned}
            if not given:
                raise DataError(f"no trainable samples in {self.uri} (skipped: {dict(self.skipped) or 'none'})")
            log.info("reader %d finished epoch %d: %d samples, skipped %s", slot, epoch + 1, given,
                     dict(self.skipped) or "none")

    def _plans(self, part: tuple[list[str], int, int], costs: PageCosts):
        shards, every, first = part
        units = group_units(_pages(read_shards(shards, decode=False, handler=skip_bad_sample, split=False), self))
        count = taken = 0
        for index, pages in enumerate(units):
            count += 1
            if index % every == first:
                taken += 1
                yield from self.tasks.build(pages, costs)
        if count and not taken:  # fewer units than the readers sharing them: repeat one rather than idle
            yield from self._plans((shards, count, first % count), costs)

    def _shuffled(self, plans, epoch: int):
        """A seeded shuffling buffer: the same order on every run, so a resumed run plans the same samples."""
        if self.shuffle_buffer <= 1:
            yield from plans
            return
        import random

        rng, buffer = random.Random(f"{self.seed}:{self.rank}:{epoch}"), []
        for plan in plans:
            buffer.append(plan)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer


def _pages(samples, stream: ReaderStream):
    """Raw tar samples -> pages with text, metadata and a lazily opened image (its header read, not its pixels)."""
    from PIL import Image

    for sample in samples:
        key = sample.get("__key__", "?")
        try:
            yield {"__key__": key, "txt": sample["txt"].decode("utf-8"), "json": json.loads(sample["json"]),
                   "png": Image.open(io.BytesIO(sample["png"]))}
        except (KeyError, UnicodeDecodeError, json.JSONDecodeError, OSError) as err:
            stream.skip("bad page", f"page {key}", f"{type(err).__name__}: {err}")
