"""Streaming task samples from local or S3 shards, split across ranks and data-loader workers.

Each (rank, worker) reads its own shards (round robin over the sorted shard
list), loops over them epoch after epoch, and can skip the samples it already
gave out, which is how a resumed run continues at the same data position.
Bad tar members are logged with their reason and skipped.
"""

from __future__ import annotations

import logging

import torch

from pipeline.corpus.reader import read_shards, shard_uris, skip_bad_sample
from training.data.encode import PromptTooLong, encode
from training.data.tasks import TaskBuilder, group_units

log = logging.getLogger(__name__)


class TaskStream(torch.utils.data.IterableDataset):
    def __init__(self, uri: str, processor, tasks: TaskBuilder, max_length: int, rank: int = 0,
                 world_size: int = 1, skip: int = 0, epochs: int | None = None, shuffle_buffer: int = 0,
                 seed: int = 0):
        super().__init__()
        self.uri, self.processor, self.tasks, self.max_length = uri, processor, tasks, max_length
        self.rank, self.world_size, self.skip, self.epochs = rank, world_size, skip, epochs
        self.shuffle_buffer, self.seed = shuffle_buffer, seed

    def my_shards(self) -> list[str]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        slots, slot = self.world_size * workers, self.rank * workers + worker
        shards = shard_uris(self.uri)
        if len(shards) < slots:  # fewer shards than readers: every reader takes all, offset by its slot
            return shards[slot % len(shards):] + shards[: slot % len(shards)]
        return shards[slot::slots]

    def __iter__(self):
        shards, given, epoch = self.my_shards(), 0, 0
        while self.epochs is None or epoch < self.epochs:
            produced = False
            for sample in self._shuffled(self._samples(shards), epoch):
                try:
                    encoded = encode(sample, self.processor, self.max_length)
                except PromptTooLong as err:
                    log.warning("skipping sample: %s", err)
                    continue
                produced = True
                given += 1
                if given > self.skip:  # a resumed run skips what it already trained on
                    yield {**encoded, "task": sample.task}
            if not produced:
                raise RuntimeError(f"no trainable samples in {self.uri}")
            epoch += 1

    def _samples(self, shards: list[str]):
        for pages in group_units(read_shards(shards, handler=skip_bad_sample)):
            yield from self.tasks.build(pages)

    def _shuffled(self, samples, epoch: int):
        """A seeded shuffling buffer: the same order on every run, so skipping N resumes exactly."""
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        import random

        rng, buffer = random.Random(f"{self.seed}:{self.rank}:{epoch}"), []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer
