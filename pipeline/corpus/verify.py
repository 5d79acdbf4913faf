"""`pipeline verify URI` and `pipeline inspect URI`: is the dataset complete and right, and what is in it.

verify proves: every shard in the manifest exists with its completion marker
and checksum; every sample decodes (PNG, text, JSON); every unit's pages join
back to the unit's text in the input shards; input units = rendered + skipped;
every shard was made with the manifest's settings (one fingerprint); the
dataset is not empty (unless it was published with --allow-empty); no run is
writing it; no stray or temporary objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import tempfile
from pathlib import Path

from pipeline import storage
from pipeline.corpus.lease import LEASE, current_holder, describe
from pipeline.corpus.render_corpus import MANIFEST
from pipeline.corpus.sharder import read_units

EXPECTED_EXTRA = {MANIFEST, "README.md", LEASE}


def verify_dataset(uri: str) -> list[str]:
    """Problems found in the dataset at uri (empty: complete and consistent)."""
    uri = storage.absolute(uri)
    store = storage.get_storage(uri)
    manifest_uri = storage.join(uri, MANIFEST)
    if not store.exists(manifest_uri):
        return [f"{manifest_uri}: no dataset manifest (the run has not finished)"]
    manifest = json.loads(store.read_text(manifest_uri))
    problems: list[str] = []
    holder = current_holder(uri)
    if holder is not None:
        problems.append(f"{uri}: a run is writing here now: {describe(holder)}")
    if not manifest.get("fingerprint"):
        problems.append(f"{manifest_uri}: no settings fingerprint (written by an older pipeline; render again)")
    if manifest.get("pages", 0) == 0 and not manifest.get("settings", {}).get("allow_empty"):
        problems.append(f"{manifest_uri}: the dataset is empty (0 pages)")
    expected = set(EXPECTED_EXTRA)
    rendered = skipped = 0
    for shard in manifest["shards"]:
        name = shard["shard"]
        expected |= {name, name[: -len(".tar")] + ".stats.json", name[: -len(".tar")] + ".parquet"}
        shard_problems, counts = _verify_shard(uri, manifest["input"], shard, manifest.get("fingerprint"))
        problems += shard_problems
        rendered += counts[0]
        skipped += counts[1]
    if rendered + skipped != manifest["input_units"]:
        problems.append(f"counts: {manifest['input_units']} input units but {rendered} rendered + {skipped} skipped")
    for obj in store.list(uri):
        relative = obj.uri[len(uri.rstrip("/")) + 1:]
        if relative not in expected:
            problems.append(f"{obj.uri}: not part of the dataset (orphan or temporary object)")
    return problems


def _verify_page_index(uri: str, name: str, stats: dict) -> list[str]:
    """The shard's `.parquet` page index exists and has one row per page."""
    import io

    import pyarrow.parquet as pq

    index_uri = storage.join(uri, name[: -len(".tar")] + ".parquet")
    try:
        rows = pq.ParquetFile(io.BytesIO(storage.get_storage(uri).read_bytes(index_uri))).metadata.num_rows
    except (storage.StorageError, FileNotFoundError):
        return [f"{index_uri}: page index missing"]
    return [] if rows == stats["samples"] else [f"{index_uri}: {rows} rows for {stats['samples']} pages"]


def _verify_shard(uri: str, input_uri: str, shard: dict, fingerprint: str | None) -> tuple[list[str], tuple[int, int]]:
    store = storage.get_storage(uri)
    name = shard["shard"]
    tar_uri = storage.join(uri, name)
    stats_uri = storage.join(uri, name[: -len(".tar")] + ".stats.json")
    if not store.exists(stats_uri):
        return [f"{stats_uri}: completion marker missing"], (0, 0)
    stats = json.loads(store.read_text(stats_uri))
    problems = _verify_page_index(uri, name, stats)
    if stats.get("fingerprint") != fingerprint:
        problems.append(f"{stats_uri}: made with other settings than the manifest's (fingerprint "
                        f"{stats.get('fingerprint')} against {fingerprint}): the dataset mixes two runs")
    with tempfile.TemporaryDirectory(prefix="glyph-verify-") as temp:
        local = Path(temp) / name
        try:
            store.download(tar_uri, local)
        except (storage.StorageError, FileNotFoundError):
            return [f"{tar_uri}: missing"], (0, 0)
        data = local.read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            problems.append(f"{tar_uri}: sha256 does not match the manifest")
        pages, sample_problems = _decode_samples(data, tar_uri)
        problems += sample_problems
    units = {u["id"]: u["text"] for u in read_units(storage.join(input_uri, stats["input_shard"]))}
    skipped_ids = {s["id"] for s in stats["skipped"]}
    for unit_id, text in units.items():
        if unit_id in skipped_ids:
            continue
        got = pages.get(unit_id)
        if got is None:
            problems.append(f"{tar_uri}: unit {unit_id!r} has no pages and is not in the skipped list")
        elif "".join(t for _, t in sorted(got)) != text:
            problems.append(f"{tar_uri}: pages of unit {unit_id!r} do not join back to its text")
        elif [p for p, _ in sorted(got)] != list(range(len(got))):
            problems.append(f"{tar_uri}: unit {unit_id!r} has missing or repeated pages")
    for unit_id in set(pages) - set(units):
        problems.append(f"{tar_uri}: pages of {unit_id!r}, which is not in the input shard")
    return problems, (len(set(pages) & set(units)), len(skipped_ids & set(units)))


def _decode_samples(data: bytes, tar_uri: str) -> tuple[dict[str, list], list[str]]:
    from PIL import Image

    samples: dict[str, dict] = {}
    problems = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                key, _, ext = member.name.partition(".")
                samples.setdefault(key, {})[ext] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        problems.append(f"{tar_uri}: not a readable tar after {len(samples)} samples: {type(err).__name__}: {err}")
    pages: dict[str, list] = {}
    for key, parts in samples.items():
        if set(parts) != {"png", "txt", "json"}:
            problems.append(f"{tar_uri}: sample {key} has parts {sorted(parts)}, want json, png, txt")
            continue
        try:
            meta = json.loads(parts["json"])
            text = parts["txt"].decode("utf-8")
            with Image.open(io.BytesIO(parts["png"])) as image:
                image.load()
                if image.size != (meta["width"], meta["height"]):
                    problems.append(f"{tar_uri}: sample {key}: image size differs from its metadata")
        except Exception as err:  # noqa: BLE001 - any decode failure is a finding
            problems.append(f"{tar_uri}: sample {key} does not decode: {type(err).__name__}: {err}")
            continue
        if text != "" and meta["char_end"] - meta["char_start"] != len(text):
            problems.append(f"{tar_uri}: sample {key}: text length differs from its span")
        pages.setdefault(meta["source_id"], []).append((meta["page"], text))
    return pages, problems


def inspect_dataset(uri: str, sheet: Path | None = None, pages: int = 12, seed: int = 0) -> dict:
    """Counts, token and compression statistics by style; a contact sheet of random pages."""
    uri = storage.absolute(uri)
    store = storage.get_storage(uri)
    if not store.exists(storage.join(uri, MANIFEST)):
        raise FileNotFoundError(f"{uri} is not a finished rendered dataset (no {MANIFEST}): `pipeline "
                                "render-corpus` writes it when every shard is done")
    manifest = json.loads(store.read_text(storage.join(uri, MANIFEST)))
    by_style: dict[str, dict] = {}
    for shard in manifest["shards"]:
        stats = json.loads(store.read_text(storage.join(uri, shard["shard"][: -len(".tar")] + ".stats.json")))
        for doc in stats["documents"]:
            entry = by_style.setdefault(doc["style"], {"units": 0, "pages": 0, "text_tokens": 0, "visual_tokens": 0})
            for key in ("pages", "text_tokens", "visual_tokens"):
                entry[key] += doc[key]
            entry["units"] += 1
    for entry in by_style.values():
        entry["compression_ratio"] = round(entry["text_tokens"] / entry["visual_tokens"], 3) \
            if entry["visual_tokens"] else 0.0
    report = {k: manifest[k] for k in ("dataset", "split", "input_units", "units", "pages", "characters",
                                       "text_tokens", "visual_tokens", "compression_ratio", "skipped_count")}
    report["shards"] = len(manifest["shards"])
    report["by_style"] = dict(sorted(by_style.items()))
    if sheet is not None and manifest["shards"]:
        _contact_sheet(uri, manifest, sheet, pages, seed)
        report["contact_sheet"] = str(sheet)
    return report


def _contact_sheet(uri: str, manifest: dict, sheet: Path, pages: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    from pipeline.corpus.reader import read_shards
    from pipeline.preview import contact_sheet

    rng = random.Random(seed)
    shard = rng.choice(manifest["shards"])["shard"]
    samples = list(read_shards(storage.join(uri, shard), split=False))
    chosen = rng.sample(samples, min(pages, len(samples)))
    contact_sheet([np.asarray(s["png"].convert("RGB")) for s in chosen]).save(sheet)
    Image.open(sheet).verify()
