"""Reading rendered shards back: samples decoded to PIL image, text and metadata.

Streams local or S3 shards through the `webdataset` library; tar bytes are
opened through the storage module, so S3 needs nothing but the standard AWS
environment. Ready for the training loaders (which add rank/worker splitting).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Iterator

from pipeline import storage

log = logging.getLogger(__name__)


def shard_uris(uri: str) -> list[str]:
    """The tar shards at uri: one .tar, or every .tar listed by the dataset manifest (or under the prefix).

    Several datasets: their URIs joined by commas, read in that order.
    """
    if "," in uri:
        return [shard for part in uri.split(",") if part.strip() for shard in shard_uris(part.strip())]
    if uri.endswith(".tar"):
        return [uri]
    store = storage.get_storage(uri)
    manifest = storage.join(uri, "manifest.json")
    if store.exists(manifest):
        return [storage.join(uri, s["shard"]) for s in json.loads(store.read_text(manifest))["shards"]]
    return sorted(o.uri for o in store.list(uri) if o.uri.endswith(".tar"))


def _open_streams(sources) -> Iterator[dict]:
    for source in sources:
        url = source["url"]
        stream = storage.get_storage(url).open_read(url)
        try:
            yield {**source, "stream": stream}
        finally:
            stream.close()


def skip_bad_sample(exn: Exception) -> bool:
    """webdataset handler: log a bad tar member or undecodable sample with its reason, and go on."""
    log.warning("skipping bad sample: %s: %s", type(exn).__name__, exn)
    return True


def read_shards(uri: str | list[str], decode: bool = True, shuffle: bool = False, seed: int = 0,
                handler=None, split: bool = True):
    """Samples: {"__key__", "png": PIL.Image, "txt": str, "json": dict} (bytes if decode=False).

    A webdataset pipeline, so it composes as one (`.map(...)`, `.batched(...)`, `.shuffle(...)`).
    With `split` (the default), shards are divided between distributed ranks, then between the
    DataLoader workers of each rank, so each sample is read once per epoch however it is loaded.
    """
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    urls = uri if isinstance(uri, list) else shard_uris(uri)
    stages = [wds.SimpleShardList(urls, seed=seed if shuffle else None)]
    if split:
        stages += [wds.split_by_node, wds.split_by_worker]
    if shuffle:
        stages.append(wds.shuffle(1000, seed=seed))
    def expand(data):
        return tar_file_expander(data, handler=handler) if handler else tar_file_expander(data)

    def group(data):
        return group_by_keys(data, handler=handler) if handler else group_by_keys(data)

    stages += [_open_streams, expand, group]  # webdataset's tar parsing, our opener
    if decode:
        stages.append(wds.decode("pil", handler=handler) if handler else wds.decode("pil"))
    return shard_pipeline_class()(*stages)


@functools.lru_cache(maxsize=1)
def shard_pipeline_class():
    """webdataset's DataPipeline with its fluid methods (.map, .batched, .shuffle, ...); made on first use,
    since webdataset is imported lazily."""
    import webdataset as wds

    class ShardPipeline(wds.DataPipeline, wds.FluidInterface):
        pass

    return ShardPipeline
