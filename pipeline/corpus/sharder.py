"""`pipeline shard`: raw corpora -> deterministic input shards of render units + a Parquet manifest.

Steps: read documents (CorpusReader), drop exact duplicates and repeated ids,
split each document into units at paragraph/line/character boundaries
(units.py), spool the units to a local file, then assign each unit to a shard
by a stable hash of its id and write the shards, the manifest and
`sharding.json` (settings, counts, skipped records with reasons). Same input
and settings, same bytes. Memory holds one document's pieces, never the corpus.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import storage
from pipeline.corpus.sources import CorpusReader, RawDocument
from pipeline.corpus.units import cut_point
from pipeline.io.readers import Skip
from pipeline.render.normalize import InvalidUnicodeError

MANIFEST = "manifest.parquet"
SUMMARY = "sharding.json"


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

    def __post_init__(self) -> None:
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num-shards: must be >= 1, got {self.num_shards}")
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

    def run(self, inputs: list[str], out_uri: str, command: list[str] | None = None) -> dict:
        with tempfile.TemporaryDirectory(prefix="glyph-shard-") as temp:
            spool = UnitSpool(Path(temp) / "units.jsonl")
            for item in CorpusReader(inputs, self.settings.id_field, self.settings.text_field):
                if isinstance(item, Skip):
                    self.counts.skipped.append(item.to_dict())
                else:
                    self._add_document(item, spool)
            num_shards = self.settings.num_shards or max(
                1, math.ceil(self.counts.characters / self.settings.chars_per_shard))
            shards = self._write_shards(spool, num_shards, Path(temp) / "shards")
            return self._publish(shards, out_uri, inputs, num_shards, command)

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
        folder.mkdir()
        names = [shard_name(self.settings.dataset, i) for i in range(num_shards)]
        plain = [(folder / name).with_suffix("").open("wb") for name in names]
        stats = [{"shard": name, "index": i, "units": 0, "characters": 0} for i, name in enumerate(names)]
        for line in spool.lines():
            unit = json.loads(line)
            index = shard_of(unit["id"], num_shards)
            plain[index].write(line)
            stats[index]["units"] += 1
            stats[index]["characters"] += unit["end"] - unit["start"]
        for handle, stat in zip(plain, stats):
            handle.close()
            target = folder / stat["shard"]
            with Path(handle.name).open("rb") as source, target.open("wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
                shutil.copyfileobj(source, packed)
            Path(handle.name).unlink()
            stat["bytes"] = target.stat().st_size
            stat["sha256"] = storage.file_sha256(target)
            stat["path"] = target
        return stats

    def _publish(self, shards: list[dict], out_uri: str, inputs: list[str], num_shards: int,
                 command: list[str] | None) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        store = storage.get_storage(out_uri)
        for stat in shards:
            store.upload(stat.pop("path"), storage.join(out_uri, stat["shard"]))
        table = pa.Table.from_pylist(shards)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        store.write_bytes(storage.join(out_uri, MANIFEST), sink.getvalue().to_pybytes())
        summary = {
            "dataset": self.settings.dataset, "num_shards": num_shards, "documents": self.counts.documents,
            "units": self.counts.units, "characters": self.counts.characters,
            "split_documents": self.counts.split_documents, "skipped_count": len(self.counts.skipped),
            "skip_reasons": self.counts.skip_reasons(), "skipped": self.counts.skipped,
            "settings": asdict(self.settings), "inputs": inputs, "command": command or sys.argv,
            "shards": shards,
        }
        store.write_text(storage.join(out_uri, SUMMARY), json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return summary


def read_units(uri: str):
    """Units of one input shard, streamed."""
    with tempfile.TemporaryDirectory(prefix="glyph-units-") as temp:
        local = Path(temp) / uri.rsplit("/", 1)[-1]
        storage.get_storage(uri).download(uri, local)
        with gzip.open(local, "rb") as handle:
            for line in handle:
                yield json.loads(line)
