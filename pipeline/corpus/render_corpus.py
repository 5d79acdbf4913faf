"""`pipeline render-corpus`: input shards -> styled WebDataset shards, in parallel with Dask.

One Dask task per input shard (the unit of work). A task renders its shard
into a local temporary folder, then publishes in this order: the tar (an
atomic rename locally; a single PUT or a multipart upload on S3, which S3 makes
visible only when complete), then `{name}.stats.json`, the completion marker,
last. A re-run skips shards whose marker exists and redoes the others;
rendering is deterministic, so a redone shard has the same bytes. The dataset
manifest is written when every shard is complete.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import storage
from pipeline.corpus.sharder import SUMMARY as SHARDING_SUMMARY
from pipeline.corpus.sharder import read_units
from pipeline.io.readers import Record

MANIFEST = "manifest.json"
TASK_RETRIES = 2  # a failed shard is retried this many times, then the run fails and names it


@dataclass
class CorpusRenderSettings:
    styles: dict[str, float]
    seed: int = 0
    backend: str = "skia"
    split: str = "train"
    tokenizer: str | None = None
    overwrite: bool = False
    config: dict | None = None  # a Glyph-format config for every unit instead of the mixture


def output_name(dataset: str, split: str, index: int) -> str:
    return f"{dataset}-{split}-{index:06d}"


def render_input_shard(shard: dict, shards_uri: str, out_uri: str, dataset: str,
                       settings: CorpusRenderSettings) -> dict:
    """Render one input shard and publish it; return its stats (the task Dask runs)."""
    name = output_name(dataset, settings.split, shard["index"])
    store = storage.get_storage(out_uri)
    marker = storage.join(out_uri, f"{name}.stats.json")
    if not settings.overwrite and store.exists(marker):
        return {**json.loads(store.read_text(marker)), "reused": True}
    from pipeline.render.config import RenderConfig
    from pipeline.render.styles import FixedStyle, StyleMixture
    from pipeline.render_shard import ShardRenderer

    styles = FixedStyle(RenderConfig.from_glyph_dict(settings.config)) if settings.config \
        else StyleMixture(settings.styles, settings.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glyph-render-") as temp:
        job = ShardRenderer(temp, styles, settings.backend,
                            prefix=name, tokenizer=settings.tokenizer, max_shard_bytes=1 << 62, preview_pages=0)
        records = _records(storage.join(shards_uri, shard["shard"]))
        summary = job.run(records, progress=False)  # the driver shows the run's progress
        tar = Path(temp) / f"{name}-000000.tar"
        final = Path(temp) / f"{name}.tar"
        if tar.exists():
            tar.rename(final)
        else:  # every unit skipped: an empty but valid tar keeps the shard set complete
            import tarfile

            tarfile.open(final, "w").close()
        checksum, size = storage.file_sha256(final), final.stat().st_size  # before the folder goes
        store.upload(final, storage.join(out_uri, f"{name}.tar"))
    stats = {
        "shard": f"{name}.tar", "index": shard["index"], "input_shard": shard["shard"],
        "input_units": shard["units"], "units": summary["documents"], "samples": summary["pages"],
        **{k: summary[k] for k in ("pages", "characters", "text_tokens", "visual_tokens", "compression_ratio",
                                    "missing_glyphs", "styles", "skipped")},
        "bytes": size, "sha256": checksum,
        "documents": [{k: d[k] for k in ("source_id", "style", "pages", "text_tokens", "visual_tokens")}
                      for d in job.documents],
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    store.write_text(marker, json.dumps(stats, ensure_ascii=False, sort_keys=True) + "\n")
    return stats


def _records(uri: str):
    for unit in read_units(uri):
        extra = {"doc_id": unit["doc_id"], "unit": unit["unit"], "unit_start": unit["start"],
                 "unit_end": unit["end"]}
        yield Record(unit["id"], unit["text"], unit["source"], unit["kind"], extra)


def make_client(workers: int | None = None, scheduler: str | None = None):
    """A Dask client: the cluster at `scheduler`, or a LocalCluster sized to this machine."""
    from dask.distributed import Client, LocalCluster

    import logging

    if scheduler:
        return Client(scheduler)
    workers = workers or os.cpu_count() or 1
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address="127.0.0.1:0", host="127.0.0.1", silence_logs=logging.WARNING)
    return Client(cluster)


def render_corpus(shards_uri: str, out_uri: str, settings: CorpusRenderSettings, workers: int | None = None,
                  scheduler: str | None = None, command: list[str] | None = None, client=None) -> dict:
    """Render every input shard listed by `pipeline shard` at shards_uri; write the dataset manifest."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    summary_uri = storage.join(shards_uri, SHARDING_SUMMARY)
    if not storage.get_storage(shards_uri).exists(summary_uri):
        raise FileNotFoundError(f"{shards_uri} is not a shard set from `pipeline shard` (no {SHARDING_SUMMARY}); "
                                "run `pipeline shard INPUT... --out URI` first and render that URI")
    sharding = json.loads(storage.get_storage(shards_uri).read_text(summary_uri))
    dataset, shards = sharding["dataset"], sharding["shards"]
    _remove_temporaries(out_uri)
    own_client = client is None
    client = client or make_client(workers, scheduler)
    print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    started = time.perf_counter()
    run = uuid.uuid4().hex[:8]  # a failed run's task keys must not answer for this one
    try:
        futures = [client.submit(render_input_shard, shard, shards_uri, out_uri, dataset, settings,
                                 key=f"render-{dataset}-{shard['index']:06d}-{run}", pure=False,
                                 retries=TASK_RETRIES)
                   for shard in shards]
        results, failures = [], []
        lines = ProgressLines(len(futures), started)
        for future in tqdm(as_completed(futures), total=len(futures), unit="shard", disable=None, file=sys.stderr):
            try:
                results.append(future.result())
                lines.done(results[-1])
            except Exception as err:  # noqa: BLE001 - reported below, with the shard's key
                failures.append(f"{future.key}: {type(err).__name__}: {err}")
                lines.failed(future.key)
    finally:
        if own_client:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(shards)} shards failed (re-run to resume):\n"
                           + "\n".join(failures))
    seconds = time.perf_counter() - started
    return _write_manifest(out_uri, shards_uri, sharding, settings, sorted(results, key=lambda r: r["index"]),
                           seconds, command)


class ProgressLines:
    """When stderr is not a terminal (an Airflow task log), one plain line per finished shard."""

    def __init__(self, total: int, started: float):
        self.total, self.started, self.finished, self.pages = total, started, 0, 0
        self.enabled = not sys.stderr.isatty()

    def done(self, stats: dict) -> None:
        self.finished += 1
        self.pages += stats.get("pages", 0)
        if not self.enabled:
            return
        seconds = max(time.perf_counter() - self.started, 1e-9)
        eta = seconds / self.finished * (self.total - self.finished)
        reused = " (already complete)" if stats.get("reused") else ""
        print(f"rendered {self.finished}/{self.total} shards{reused}: {self.pages} pages, "
              f"{self.pages / seconds:.1f} pages/s, eta {int(eta) // 60}m{int(eta) % 60:02d}s",
              file=sys.stderr, flush=True)

    def failed(self, key: str) -> None:
        if self.enabled:
            print(f"shard {key} failed (the run goes on; re-run to resume)", file=sys.stderr, flush=True)


def _remove_temporaries(out_uri: str) -> None:
    """Local temporary files left by a killed run (S3 never shows an unfinished upload)."""
    if storage.is_s3(out_uri):
        return
    store = storage.get_storage(out_uri)
    for obj in store.list(out_uri):
        name = obj.uri.rsplit("/", 1)[-1]
        if name.startswith(".") and name.endswith(".tmp"):
            store.delete(obj.uri)


def _write_manifest(out_uri: str, shards_uri: str, sharding: dict, settings: CorpusRenderSettings,
                    results: list[dict], seconds: float, command: list[str] | None) -> dict:
    totals = {key: sum(r[key] for r in results)
              for key in ("units", "samples", "characters", "text_tokens", "visual_tokens", "missing_glyphs")}
    styles: dict[str, int] = {}
    for result in results:
        for style, count in result["styles"].items():
            styles[style] = styles.get(style, 0) + count
    skipped = [s for r in results for s in r["skipped"]]
    manifest = {
        "dataset": sharding["dataset"], "split": settings.split, "input": shards_uri,
        "input_units": sharding["units"], **totals, "pages": totals["samples"],
        "skipped_count": len(skipped), "skipped": skipped,
        "compression_ratio": round(totals["text_tokens"] / totals["visual_tokens"], 4) if totals["visual_tokens"]
        else 0.0,
        "styles": styles, "seconds": round(seconds, 2),
        "pages_per_second": round(totals["samples"] / seconds, 2) if seconds else 0.0,
        "characters_per_second": round(totals["characters"] / seconds) if seconds else 0,
        "settings": asdict(settings), "command": command or sys.argv,
        "shards": [{k: r[k] for k in ("shard", "index", "input_shard", "units", "samples", "bytes", "sha256",
                                      "text_tokens", "visual_tokens")} for r in results],
    }
    storage.get_storage(out_uri).write_text(storage.join(out_uri, MANIFEST),
                                            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
