"""`pipeline render-corpus`: input shards -> styled WebDataset shards, in parallel with Dask.

One Dask task per input shard (the unit of work). A task renders its shard
into a local temporary folder, then publishes in this order: the tar (an
atomic rename locally; a single PUT or a multipart upload on S3, which S3 makes
visible only when complete), then `{name}.stats.json`, the completion marker,
last. A re-run skips shards whose marker exists and redoes the others;
rendering is deterministic, so a redone shard has the same bytes. The dataset
manifest is written when every shard is complete.

What shapes the bytes (the input shards' contents, styles, seed, config,
backend, tokenizer, split and the renderer's version) is the output's identity:
its fingerprint is in every marker and in the manifest. A re-run reuses only
shards with the run's own fingerprint and refuses, naming the settings that
differ, to resume over others unless `--overwrite`. The driver holds the
output's lease (lease.py) for the whole run, so two runs never write one output.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pipeline
from pipeline import storage
from pipeline.corpus.lease import OutputLease
from pipeline.corpus.sharder import SUMMARY as SHARDING_SUMMARY
from pipeline.corpus.sharder import fingerprint, read_units, shards_digest
from pipeline.io.readers import Record

MANIFEST = "manifest.json"
TASK_RETRIES = 2  # a failed shard is retried this many times, then the run fails and names it
SHARD_FILE = re.compile(r"^[A-Za-z0-9_-]+-\d{6}\.(tar|stats\.json|parquet)$")  # what a render publishes


class MixedSettingsError(ValueError):
    """The output holds shards made with other settings; resuming over them would mix two datasets."""


@dataclass
class CorpusRenderSettings:
    styles: dict[str, float]
    seed: int = 0
    backend: str = "skia"
    split: str = "train"
    tokenizer: str | None = None
    overwrite: bool = False
    config: dict | None = None  # a Glyph-format config for every unit instead of the mixture
    allow_empty: bool = False  # publish a dataset of 0 pages instead of failing
    min_px_per_em: float | None = None  # the sampler's legibility floor


def render_identity(sharding: dict, settings: CorpusRenderSettings) -> dict:
    """Everything that shapes the output's bytes (not where it goes, how many workers, or --overwrite)."""
    from pipeline.render.tokens import DEFAULT_TOKENIZER

    return {
        "input": {"dataset": sharding["dataset"], "num_shards": sharding["num_shards"],
                  "shards_sha256": shards_digest(sharding["shards"])},
        "styles": None if settings.config else dict(sorted(settings.styles.items())),
        "config": settings.config, "seed": settings.seed, "backend": settings.backend,
        "tokenizer": settings.tokenizer or DEFAULT_TOKENIZER, "split": settings.split,
        "min_px_per_em": settings.min_px_per_em,
        "renderer": pipeline.__version__,
    }


def identity_differences(old: dict | None, new: dict) -> list[str]:
    """The settings that differ, as `key: old -> new` (the input as its summary)."""
    if not old:
        return ["made by an older pipeline that recorded no settings fingerprint"]
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            before, after = old.get(key), new.get(key)
            if key == "input":
                before, after = "other input shards", "these input shards"
            elif key == "config":
                before = "a config" if before else "none"
                after = "a config" if after else "none"
            out.append(f"{key}: {before} -> {after}")
    return out


def output_name(dataset: str, split: str, index: int) -> str:
    return f"{dataset}-{split}-{index:06d}"


def render_input_shard(shard: dict, shards_uri: str, out_uri: str, dataset: str,
                       settings: CorpusRenderSettings, identity: dict, run_id: str) -> dict:
    """Render one input shard and publish it; return its stats (the task Dask runs).

    A marker with this run's fingerprint is reused (a retried task, or a resumed run); one with another
    is refused: the driver removed those it was told to overwrite, so another run has written it since.
    """
    name = output_name(dataset, settings.split, shard["index"])
    store = storage.get_storage(out_uri, run_id)
    marker = storage.join(out_uri, f"{name}.stats.json")
    wanted = fingerprint(identity)
    if store.exists(marker):
        stats = json.loads(store.read_text(marker))
        if stats.get("fingerprint") == wanted:
            return {**stats, "reused": True}
        raise MixedSettingsError(f"{marker} was made with other settings ("
                                 + "; ".join(identity_differences(stats.get("identity"), identity)) + ")")
    from pipeline.render.config import RenderConfig
    from pipeline.render.styles import FixedStyle, StyleMixture
    from pipeline.render_shard import ShardRenderer

    styles = FixedStyle(RenderConfig.from_glyph_dict(settings.config)) if settings.config \
        else StyleMixture(settings.styles, settings.seed, settings.min_px_per_em)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glyph-render-") as temp:
        job = ShardRenderer(temp, styles, settings.backend,
                            prefix=name, tokenizer=settings.tokenizer, max_shard_bytes=1 << 62, preview_pages=0)
        records = _records(storage.join(shards_uri, shard["shard"]), shard.get("sha256"))
        summary = job.run(records, progress=False)  # the driver shows the run's progress
        tar = Path(temp) / f"{name}-000000.tar"
        final = Path(temp) / f"{name}.tar"
        if tar.exists():
            tar.rename(final)
        else:  # every unit skipped: an empty but valid tar keeps the shard set complete
            import tarfile

            tarfile.open(final, "w").close()
        checksum, size = storage.file_sha256(final), final.stat().st_size  # before the folder goes
        index = write_page_index(final, Path(temp) / f"{name}.parquet")
        store.upload(final, storage.join(out_uri, f"{name}.tar"))
        store.upload(index, storage.join(out_uri, f"{name}.parquet"))
    stats = {
        "shard": f"{name}.tar", "index": shard["index"], "input_shard": shard["shard"],
        "input_units": shard["units"], "units": summary["documents"], "samples": summary["pages"],
        **{k: summary[k] for k in ("pages", "characters", "text_tokens", "visual_tokens", "compression_ratio",
                                    "missing_glyphs", "styles", "skipped")},
        "bytes": size, "sha256": checksum, "fingerprint": wanted, "identity": identity,
        "documents": [{k: d[k] for k in ("source_id", "style", "pages", "text_tokens", "visual_tokens")}
                      for d in job.documents],
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    store.write_text(marker, json.dumps(stats, ensure_ascii=False, sort_keys=True) + "\n")
    return stats


PAGE_INDEX_COLUMNS = ("key", "source_id", "page", "chars", "text_tokens", "visual_tokens", "style", "width",
                      "height", "missing_glyphs")


def write_page_index(tar: Path, target: Path) -> Path:
    """`{shard}.parquet` beside each tar: one row per page, to analyse a dataset without opening its tars."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.corpus.reader import read_shards

    rows = []
    for sample in read_shards(str(tar), decode=False, split=False):
        meta = json.loads(sample["json"])
        rows.append({"key": sample["__key__"], "source_id": meta["source_id"], "page": meta["page"],
                     "chars": meta["char_end"] - meta["char_start"], "text_tokens": meta["text_tokens"],
                     "visual_tokens": meta["visual_tokens"], "style": meta["style"], "width": meta["width"],
                     "height": meta["height"], "missing_glyphs": meta["missing_glyphs"]})
    schema = pa.schema([("key", pa.string()), ("source_id", pa.string()), ("page", pa.int32()),
                        ("chars", pa.int64()), ("text_tokens", pa.int64()), ("visual_tokens", pa.int64()),
                        ("style", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("missing_glyphs", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), target)
    return target


def _records(uri: str, sha256: str | None = None):
    for unit in read_units(uri, sha256):
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
                  scheduler: str | None = None, command: list[str] | None = None, client=None,
                  wait_lease: float = 0.0) -> dict:
    """Render every input shard listed by `pipeline shard` at shards_uri; write the dataset manifest."""
    shards_uri, out_uri = storage.absolute(shards_uri), storage.absolute(out_uri)
    sharding = read_sharding(shards_uri)
    identity = render_identity(sharding, settings)
    run_id = storage.new_run_id()
    with OutputLease(out_uri, run_id, "render-corpus", wait=wait_lease) as lease:
        clear_leftovers(out_uri, run_id, lease.started)
        claim_output(out_uri, identity, settings.overwrite, run_id)
        started = time.perf_counter()
        results = _run_tasks(sharding, shards_uri, out_uri, settings, identity, run_id, lease, client, workers,
                             scheduler)
        lease.check()
        return _write_manifest(out_uri, shards_uri, sharding, settings, identity, results,
                               time.perf_counter() - started, command)


def read_sharding(shards_uri: str) -> dict:
    store = storage.get_storage(shards_uri)
    summary_uri = storage.join(shards_uri, SHARDING_SUMMARY)
    if not store.exists(summary_uri):
        raise FileNotFoundError(f"{shards_uri} is not a shard set from `pipeline shard` (no {SHARDING_SUMMARY}); "
                                "run `pipeline shard INPUT... --out URI` first and render that URI")
    return json.loads(store.read_text(summary_uri))


def clear_leftovers(out_uri: str, run_id: str, lease_started: float) -> None:
    """What killed runs left: their temporary files (locally), their unfinished multipart uploads (on S3).
    Only runs' own temporaries are touched (a user's `.tmp` files are not), and only uploads begun before
    this run took the lease, so none is a live run's."""
    store = storage.get_storage(out_uri, run_id)
    if storage.is_s3(out_uri):
        for uri in store.abort_stale_uploads(out_uri, started_before=lease_started):
            print(f"aborted an unfinished upload left by a killed run: {uri}", file=sys.stderr)
        return
    for obj in store.list(out_uri):
        if storage.is_run_temporary(obj.uri.rsplit("/", 1)[-1]):
            store.delete(obj.uri)


def claim_output(out_uri: str, identity: dict, overwrite: bool, run_id: str) -> None:
    """Refuse to resume over shards made with other settings; with overwrite, remove what a render made there.

    Only a render's own files (shards, markers, page indexes, manifest, card) are ever removed.
    """
    store = storage.get_storage(out_uri, run_id)
    wanted = fingerprint(identity)
    names = {obj.uri.rsplit("/", 1)[-1]: obj.uri for obj in store.list(out_uri)
             if "/" not in obj.uri[len(out_uri.rstrip("/")) + 1:]}
    owned = {name: uri for name, uri in names.items() if SHARD_FILE.match(name) or name in (MANIFEST, CARD)}
    if overwrite:
        for name in sorted(owned, key=lambda n: n != MANIFEST):  # the manifest first: no longer "finished"
            store.delete(owned[name])
        return
    found = []
    for name in sorted(n for n in owned if n.endswith(".stats.json")) + ([MANIFEST] if MANIFEST in owned else []):
        stats = json.loads(store.read_text(owned[name]))
        if stats.get("fingerprint") != wanted:
            found.append((name, stats.get("identity")))
    if found:
        differences = identity_differences(found[0][1], identity)
        raise MixedSettingsError(
            f"{out_uri} holds {len(found)} file(s) made with other settings (e.g. {found[0][0]}): "
            + "; ".join(differences) + ". Resuming would mix two datasets: render to another --out, or pass "
            "--overwrite to replace what is there")


def _run_tasks(sharding: dict, shards_uri: str, out_uri: str, settings: CorpusRenderSettings, identity: dict,
               run_id: str, lease: OutputLease, client, workers: int | None, scheduler: str | None) -> list[dict]:
    from dask.distributed import as_completed
    from tqdm import tqdm

    dataset, shards = sharding["dataset"], sharding["shards"]
    own_client = client is None
    client = client or make_client(workers, scheduler)
    print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    try:
        futures = [client.submit(render_input_shard, shard, shards_uri, out_uri, dataset, settings, identity, run_id,
                                 key=f"render-{dataset}-{shard['index']:06d}-{run_id}", pure=False,
                                 retries=TASK_RETRIES)
                   for shard in shards]  # the run id in the key: a failed run's tasks must not answer for this one
        results, failures = [], []
        lines = ProgressLines(len(futures), time.perf_counter())
        for future in tqdm(as_completed(futures), total=len(futures), unit="shard", disable=None, file=sys.stderr):
            lease.check()
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
    return sorted(results, key=lambda r: r["index"])


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


def _write_manifest(out_uri: str, shards_uri: str, sharding: dict, settings: CorpusRenderSettings,
                    identity: dict, results: list[dict], seconds: float, command: list[str] | None) -> dict:
    totals = {key: sum(r[key] for r in results)
              for key in ("units", "samples", "characters", "text_tokens", "visual_tokens", "missing_glyphs")}
    styles: dict[str, int] = {}
    for result in results:
        for style, count in result["styles"].items():
            styles[style] = styles.get(style, 0) + count
    skipped = [s for r in results for s in r["skipped"]]
    if totals["samples"] == 0 and not settings.allow_empty:
        reasons = sorted({s["reason"] for s in skipped})[:5]
        raise ValueError(f"the render made 0 pages from {sharding['units']} input units"
                         + (f" (skipped: {'; '.join(reasons)})" if reasons else "")
                         + "; nothing published. Pass --allow-empty to publish an empty dataset")
    manifest = {
        "dataset": sharding["dataset"], "split": settings.split, "input": shards_uri,
        "input_units": sharding["units"], **totals, "pages": totals["samples"],
        "skipped_count": len(skipped), "skipped": skipped,
        "compression_ratio": round(totals["text_tokens"] / totals["visual_tokens"], 4) if totals["visual_tokens"]
        else 0.0,
        "styles": styles, "seconds": round(seconds, 2),
        "pages_per_second": round(totals["samples"] / seconds, 2) if seconds else 0.0,
        "characters_per_second": round(totals["characters"] / seconds) if seconds else 0,
        "settings": asdict(settings), "fingerprint": fingerprint(identity), "identity": identity,
        "command": command or sys.argv,
        "shards": [{k: r[k] for k in ("shard", "index", "input_shard", "units", "samples", "bytes", "sha256",
                                      "text_tokens", "visual_tokens")} for r in results],
    }
    store = storage.get_storage(out_uri)
    store.write_text(storage.join(out_uri, CARD), dataset_card(manifest))
    store.write_text(storage.join(out_uri, MANIFEST), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


CARD = "README.md"
# The page JSON's fields and their types, for `datasets` (which otherwise guesses from the first rows:
# an empty `missing_chars` list reads as null-typed, and a later page with one fails to cast).
PAGE_FEATURES = [
    ("source_id", "string"), ("doc_id", "string"), ("unit", "int64"), ("unit_start", "int64"),
    ("unit_end", "int64"), ("style", "string"), ("backend", "string"), ("page", "int64"),
    ("char_start", "int64"), ("char_end", "int64"), ("text_tokens", "int64"), ("visual_tokens", "int64"),
    ("compression_ratio", "float64"), ("missing_glyphs", "int64"), ("missing_chars", ["string"]),
    ("width", "int64"), ("height", "int64"),
    ("lines", [{"box": ["float64"], "start": "int64", "end": "int64"}]),
    ("px_per_em", "float64"), ("contrast", "float64"), ("gutter", {"line_numbers": "bool", "in_target": "bool"}),
]
CONFIG_FEATURES = [
    ("page-size", "string"), ("dpi", "float64"), ("margin-x", "float64"), ("margin-y", "float64"),
    ("font-path", "string"), ("font-size", "float64"), ("line-height", "float64"), ("font-color", "string"),
    ("alignment", "string"), ("horizontal-scale", "float64"), ("first-line-indent", "float64"),
    ("left-indent", "float64"), ("right-indent", "float64"), ("space-before", "float64"),
    ("space-after", "float64"), ("border-width", "float64"), ("border-padding", "float64"),
    ("page-bg-color", "string"), ("para-bg-color", "string"), ("para-border-color", "string"),
    ("auto-crop-width", "bool"), ("auto-crop-last-page", "bool"), ("newline-markup", "string"),
    ("fallback-fonts", ["string"]), ("tab-size", "int64"), ("line-numbers", "bool"),
    ("syntax-highlighting", "string"), ("style", "string"),
]


def _feature(name: str, kind) -> dict:
    """One feature in the Hugging Face card's YAML form."""
    if isinstance(kind, dict):
        return {"name": name, "struct": [_feature(k, v) for k, v in kind.items()]}
    if isinstance(kind, list):
        inner = kind[0]
        if isinstance(inner, dict):
            return {"name": name, "list": [_feature(k, v) for k, v in inner.items()]}
        return {"name": name, "list": inner}
    return {"name": name, "dtype": kind}


def dataset_features():
    """The rendered samples' `datasets.Features` (the same as the card's), for
    `datasets.load_dataset("webdataset", data_files=..., features=dataset_features())`."""
    import datasets

    return datasets.Features._from_yaml_list(_card_features())


def _card_features() -> list[dict]:
    page = [_feature(k, v) for k, v in PAGE_FEATURES]
    page.append({"name": "config", "struct": [_feature(k, v) for k, v in CONFIG_FEATURES]})
    return [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
            {"name": "png", "dtype": "image"}, {"name": "txt", "dtype": "string"}, {"name": "json", "struct": page}]


def dataset_card(manifest: dict) -> str:
    """README.md with the features, so `datasets.load_dataset("webdataset", ...)` or on the folder reads typed rows."""
    import yaml

    features = _card_features()
    header = {"configs": [{"config_name": "default",
                           "data_files": [{"split": manifest["split"], "path": "*.tar"}]}],
              "dataset_info": {"features": features}}
    return ("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n"
            f"# {manifest['dataset']} ({manifest['split']})\n\n"
            f"{manifest['pages']} rendered pages of {manifest['units']} text units, "
            f"{manifest['text_tokens']} text tokens as {manifest['visual_tokens']} visual tokens "
            f"(compression {manifest['compression_ratio']}), styles {manifest['styles']}.\n\n"
            "Each sample: `png` (the page), `txt` (exactly the text drawn on it), `json` (metadata; `lines` maps\n"
            "each line's pixel box to its characters of the unit's text, the page holding `char_start` to\n"
            "`char_end`). `manifest.json` lists the shards; each\n"
            "`*.parquet` beside a tar has one row per page.\n\n"
            "```python\n"
            "import datasets\n"
            "pages = datasets.load_dataset(\"path/to/this/folder\", split=\"train\", streaming=True)\n"
            "```\n")
