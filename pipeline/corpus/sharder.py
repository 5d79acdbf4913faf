"""`pipeline shard`: raw corpora -> deterministic input shards of render units + a Parquet manifest.

Steps: read documents (CorpusReader), drop exact duplicates and repeated ids,
split each document into units at paragraph/line/character boundaries
(units.py), spool the units to a local file, then assign each unit to a shard
by a stable hash of its id and write the shards, the manifest and
`sharding.json` (settings, counts, skipped records with reasons, damaged files
and where they broke). Same input and settings, same bytes. Memory holds one
document's pieces, never the corpus.

The output folder is held by a lease (lease.py) while the run writes it. Its
identity is the settings and inputs (`settings_fingerprint`, checked before
anything is read) and the shards' contents (`fingerprint`): a re-run into a
folder that holds another identity refuses unless `overwrite`; an identical
re-run publishes nothing new. Shard files of an earlier, other sharding are
removed when the new one is published, so a folder never mixes two.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import resource
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pipeline
from pipeline import storage
from pipeline.corpus.lease import OutputLease
from pipeline.corpus.sources import CorpusReader, RawDocument
from pipeline.corpus.units import cut_point
from pipeline.io.readers import DamagedFile, Skip
from pipeline.render.normalize import InvalidUnicodeError

MANIFEST = "manifest.parquet"
SUMMARY = "sharding.json"
MAX_SHARDS = 100_000
SHARD_FILE = re.compile(r"^[A-Za-z0-9_-]+-input-\d{6}\.jsonl\.gz$")


class ShardingExists(ValueError):
    """The output folder holds a sharding of other settings or inputs."""


@dataclass
class ShardSettings:
    num_shards: int | None = None  # None: enough shards for about chars_per_shard characters each
    max_chars: int = 200_000  # characters per render unit (one training sample)
    chars_per_shard: int = 20_000_000  # about 1 GB of pages at the paper's best config
    dataset: str = "corpus"
    id_field: str = "id"
    text_field: str = "text"
    max_visual_tokens: int | None = None  # also cap each unit at this many visual tokens...
    budget_style: str = "best-en"  # ...when rendered in this style
    allow_empty: bool = False  # publish a sharding with no documents instead of failing

    def __post_init__(self) -> None:
        if self.num_shards is not None and not 1 <= self.num_shards <= MAX_SHARDS:
            raise ValueError(f"num-shards: must be in [1, {MAX_SHARDS}], got {self.num_shards}")
        if self.chars_per_shard < 1:
            raise ValueError(f"chars-per-shard: must be >= 1, got {self.chars_per_shard}")
        if self.max_chars < 1:
            raise ValueError(f"max-chars: must be >= 1, got {self.max_chars}")
        if not self.dataset.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"dataset: letters, digits, - and _ only, got {self.dataset!r}")


def shard_of(unit_id: str, num_shards: int) -> int:
    """Stable shard index for a unit id (independent of Python's hash seed).

    >>> shard_of("doc-1#0", 8)
    6
    """
    return int.from_bytes(hashlib.sha1(unit_id.encode("utf-8")).digest()[:8], "big") % num_shards


def shard_name(dataset: str, index: int) -> str:
    return f"{dataset}-input-{index:06d}.jsonl.gz"


@dataclass
class ShardCounts:
    documents: int = 0
    units: int = 0
    characters: int = 0
    split_documents: int = 0
    skipped: list[dict] = field(default_factory=list)
    damaged: list[dict] = field(default_factory=list)  # files kept up to where they broke

    def skip_reasons(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for skip in self.skipped:
            key = skip["reason"].split(":")[0].split(" of ")[0]
            reasons[key] = reasons.get(key, 0) + 1
        return reasons


class UnitSpool:
    """Units written one JSON line each to a local file; a document can be taken back."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = path.open("w+b")

    def mark(self) -> int:
        return self.handle.tell()

    def rollback(self, mark: int) -> None:
        self.handle.seek(mark)
        self.handle.truncate()

    def write(self, unit: dict) -> None:
        self.handle.write(json.dumps(unit, ensure_ascii=False).encode("utf-8") + b"\n")

    def lines(self):
        self.handle.flush()
        self.handle.seek(0)
        yield from self.handle


class CorpusSharder:
    def __init__(self, settings: ShardSettings):
        self.settings = settings
        self.counts = ShardCounts()
        self.budget = None
        if settings.max_visual_tokens:
            from pipeline.corpus.budget import VisualTokenBudget
            from pipeline.render.styles import load_style

            self.budget = VisualTokenBudget(load_style(settings.budget_style), settings.max_visual_tokens)
        self._hashes: dict[bytes, str] = {}
        self._ids: set[str] = set()

    def identity(self, inputs: list[str]) -> dict:
        """What the shards are made from, but for the inputs' contents (checked after reading)."""
        settings = {k: v for k, v in asdict(self.settings).items() if k != "allow_empty"}
        return {"inputs": inputs, "settings": settings, "sharder": pipeline.__version__}

    def run(self, inputs: list[str], out_uri: str, command: list[str] | None = None, overwrite: bool = False,
            wait_lease: float = 0.0) -> dict:
        inputs, out_uri = [storage.absolute(i) for i in inputs], storage.absolute(out_uri)
        identity = self.identity(inputs)
        run_id = storage.new_run_id()
        with OutputLease(out_uri, run_id, "shard", wait=wait_lease) as lease:
            existing = self._existing(out_uri)
            if existing and not overwrite and existing.get("settings_fingerprint") != fingerprint(identity):
                raise ShardingExists(self._refusal(out_uri, existing, identity))
            with tempfile.TemporaryDirectory(prefix="glyph-shard-") as temp:
                spool = UnitSpool(Path(temp) / "units.jsonl")
                for item in CorpusReader(inputs, self.settings.id_field, self.settings.text_field):
                    if isinstance(item, Skip):
                        self.counts.skipped.append(item.to_dict())
                        if isinstance(item, DamagedFile):
                            self.counts.damaged.append(item.to_dict())
                    else:
                        self._add_document(item, spool)
                if self.counts.documents == 0 and not self.settings.allow_empty:
                    raise ValueError(self._empty_message(inputs))
                num_shards = self.settings.num_shards or max(
                    1, math.ceil(self.counts.characters / self.settings.chars_per_shard))
                shards = self._write_shards(spool, num_shards, Path(temp) / "shards")
                lease.check()
                summary = self._summary(shards, inputs, num_shards, identity, command)
                if existing and existing.get("fingerprint") == summary["fingerprint"]:
                    return {**existing, "unchanged": True}  # the same shards are there already
                if existing and not overwrite:
                    raise ShardingExists(f"{out_uri} holds a sharding of the same settings but other input "
                                         "contents (the inputs changed since): shard to another --out, or pass "
                                         "--overwrite to replace it")
                return self._publish(shards, out_uri, summary, run_id)

    @staticmethod
    def _existing(out_uri: str) -> dict | None:
        store = storage.get_storage(out_uri)
        summary_uri = storage.join(out_uri, SUMMARY)
        return json.loads(store.read_text(summary_uri)) if store.exists(summary_uri) else None

    @staticmethod
    def _refusal(out_uri: str, existing: dict, identity: dict) -> str:
        old = existing.get("identity") or {}
        differences = [f"{key}: {old.get(key)!r} -> {identity[key]!r}"
                       for key in ("inputs", "sharder") if old.get(key) != identity[key]]
        differences += [f"{key}: {old.get('settings', {}).get(key)!r} -> {value!r}"
                        for key, value in identity["settings"].items()
                        if old.get("settings", {}).get(key) != value]
        if not old:
            differences = ["made by an older pipeline that recorded no settings fingerprint"]
        return (f"{out_uri} already holds input shards of other settings ({'; '.join(differences)}); "
                "shard to another --out, or pass --overwrite to replace them")

    def _empty_message(self, inputs: list[str]) -> str:
        reasons = self.counts.skip_reasons()
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "no records"
        return (f"no documents to shard in {', '.join(inputs)} ({detail}); nothing published. "
                "Pass --allow-empty to publish an empty sharding")

    def _add_document(self, doc: RawDocument, spool: UnitSpool) -> None:
        if doc.id in self._ids:
            self.counts.skipped.append(Skip(doc.where, doc.id, "duplicate id").to_dict())
            return
        mark = spool.mark()
        digest = hashlib.sha256()
        try:
            characters, units = self._split(doc, digest, spool)
        except InvalidUnicodeError as err:
            spool.rollback(mark)
            self.counts.skipped.append(Skip(doc.where, doc.id, f"text is not valid Unicode: {err}").to_dict())
            return
        key = digest.digest()
        if characters == 0 or key in self._hashes:
            spool.rollback(mark)
            reason = "empty document" if characters == 0 else f"duplicate content of {self._hashes[key]!r}"
            self.counts.skipped.append(Skip(doc.where, doc.id, reason).to_dict())
            return
        self._hashes[key] = doc.id
        self._ids.add(doc.id)
        self.counts.documents += 1
        self.counts.units += units
        self.counts.characters += characters
        self.counts.split_documents += units > 1

    def _split(self, doc: RawDocument, digest, spool: UnitSpool) -> tuple[int, int]:
        """Stream the document's pieces into units within budget; return (chars, units)."""
        buffer, offset, units = "", 0, 0

        def emit(text: str) -> None:
            nonlocal offset, units
            spool.write({"id": f"{doc.id}#{units}", "doc_id": doc.id, "unit": units, "start": offset,
                         "end": offset + len(text), "kind": doc.kind, "source": doc.where, "text": text})
            offset += len(text)
            units += 1

        for piece in doc.chunks:
            digest.update(piece.encode("utf-8"))
            buffer += piece
            buffer = buffer[self._cut_units(buffer, emit, final=False):]
        self._cut_units(buffer, emit, final=True)
        return offset, units

    def _cut_units(self, text: str, emit, final: bool) -> int:
        """Emit the units that can be decided from `text`; return where the undecided rest starts.

        Cuts by index: re-slicing a 50 MB buffer per unit would be quadratic.
        """
        pos = 0
        while pos < len(text):
            limit = self.settings.max_chars
            if self.budget is not None:
                limit = min(limit, self.budget.max_chars())
            if not final and len(text) - pos <= limit:
                break  # the next unit may take text that has not arrived yet
            cut = cut_point(text, pos, limit)
            if self.budget is not None and not self.budget.fits(text[pos:cut]):
                continue  # the estimate shrank: cut again, shorter
            emit(text[pos:cut])
            pos = cut
        return pos

    def _write_shards(self, spool: UnitSpool, num_shards: int, folder: Path) -> list[dict]:
        """Each shard's units in spool order, gzipped; in passes of as many shards as files may be open."""
        folder.mkdir()
        stats = [{"shard": shard_name(self.settings.dataset, i), "index": i, "units": 0, "characters": 0}
                 for i in range(num_shards)]
        per_pass = _open_file_allowance()
        for first in range(0, num_shards, per_pass):
            batch = stats[first:first + per_pass]
            plain = [(folder / stat["shard"]).with_suffix("").open("wb") for stat in batch]
            try:
                for line in spool.lines():
                    unit = json.loads(line)
                    index = shard_of(unit["id"], num_shards) - first
                    if 0 <= index < len(batch):
                        plain[index].write(line)
                        batch[index]["units"] += 1
                        batch[index]["characters"] += unit["end"] - unit["start"]
            finally:
                for handle in plain:
                    handle.close()
            for handle, stat in zip(plain, batch):
                self._pack(Path(handle.name), folder / stat["shard"], stat)
        return stats

    @staticmethod
    def _pack(plain: Path, target: Path, stat: dict) -> None:
        with plain.open("rb") as source, target.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            shutil.copyfileobj(source, packed)
        plain.unlink()
        stat["bytes"] = target.stat().st_size
        stat["sha256"] = storage.file_sha256(target)
        stat["path"] = target

    def _summary(self, shards: list[dict], inputs: list[str], num_shards: int, identity: dict,
                 command: list[str] | None) -> dict:
        contents = shards_digest(shards)
        return {
            "dataset": self.settings.dataset, "num_shards": num_shards, "documents": self.counts.documents,
            "units": self.counts.units, "characters": self.counts.characters,
            "split_documents": self.counts.split_documents, "skipped_count": len(self.counts.skipped),
            "skip_reasons": self.counts.skip_reasons(), "skipped": self.counts.skipped,
            "damaged_files": self.counts.damaged,
            "settings": asdict(self.settings), "inputs": inputs, "command": command or sys.argv,
            "identity": identity, "settings_fingerprint": fingerprint(identity),
            "fingerprint": fingerprint({"identity": identity, "shards": contents}),
            "shards": shards,
        }

    @staticmethod
    def _publish(shards: list[dict], out_uri: str, summary: dict, run_id: str) -> dict:
        """sharding.json goes first (the folder is unfinished while shards change) and comes back last;
        shard files of an earlier sharding that this one does not have are removed."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        store = storage.get_storage(out_uri, run_id)
        store.delete(storage.join(out_uri, SUMMARY))
        paths = {stat["shard"]: stat.pop("path") for stat in shards}
        for name, path in paths.items():
            store.upload(path, storage.join(out_uri, name))
        for obj in store.list(out_uri):
            name = obj.uri[len(out_uri.rstrip("/")) + 1:]
            if SHARD_FILE.match(name) and name not in paths or storage.is_run_temporary(name.rsplit("/", 1)[-1]):
                store.delete(obj.uri)
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(shards), sink)
        store.write_bytes(storage.join(out_uri, MANIFEST), sink.getvalue().to_pybytes())
        store.write_text(storage.join(out_uri, SUMMARY), json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary


def fingerprint(value: dict) -> str:
    """A short, stable hash of a JSON-able identity (settings, inputs): what an output was made from."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def shards_digest(shards: list[dict]) -> str:
    """One hash of a shard set's contents, from each shard's sha256."""
    return hashlib.sha256("".join(shard["sha256"] for shard in shards).encode()).hexdigest()


def _open_file_allowance() -> int:
    """Shard files one pass may hold open: the soft limit on open files, less room for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 4096
    return max(16, min(1024, limit - 64))


def read_units(uri: str, sha256: str | None = None):
    """Units of one input shard, streamed; with `sha256`, the shard must be the one sharding.json lists."""
    with tempfile.TemporaryDirectory(prefix="glyph-units-") as temp:
        local = Path(temp) / uri.rsplit("/", 1)[-1]
        storage.get_storage(uri).download(uri, local)
        if sha256 and storage.file_sha256(local) != sha256:
            raise ValueError(f"{uri} is not the input shard its sharding.json lists (its sha256 differs): the "
                             "folder was sharded again since; render it again from the start")
        with gzip.open(local, "rb") as handle:
            for line in handle:
                yield json.loads(line)
