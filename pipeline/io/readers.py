"""Input shard readers: .jsonl, .parquet, .txt -> records, or skips with a reason.

A bad record never stops a shard: it is yielded as a Skip naming where it was
(line number or id) and why, and every other record is still read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline.io.kinds import kind_of
from pipeline.render.normalize import InvalidUnicodeError, normalize_text

SUPPORTED = (".jsonl", ".parquet", ".txt")


@dataclass
class Record:
    id: str
    text: str  # normalized
    where: str  # "line 3", "row 7" or the file name
    kind: str = "text"  # "code" for source files: picks the code style in a mixture
    extra: dict = field(default_factory=dict)  # carried into each page's metadata (e.g. unit spans)


@dataclass
class Skip:
    where: str
    id: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"where": self.where, "id": self.id, "reason": self.reason}


@dataclass
class DamagedFile(Skip):
    """A file that broke part-way (truncated or corrupt): the records before `where` were kept."""

    kept: int = 0  # records read before it broke

    def to_dict(self) -> dict:
        return {**super().to_dict(), "kept_records": self.kept}


class ShardReader:
    """Reads one input shard; `id_field` and `text_field` name the columns."""

    def __init__(self, path: str | Path, id_field: str = "id", text_field: str = "text"):
        self.path = Path(path)
        self.id_field, self.text_field = id_field, text_field
        if self.path.suffix not in SUPPORTED:
            raise ValueError(f"shard: unsupported file type {self.path.suffix!r}; use one of {', '.join(SUPPORTED)}")
        if not self.path.is_file():
            raise FileNotFoundError(f"shard: {self.path} does not exist")

    def __iter__(self) -> Iterator[Record | Skip]:
        reader = {".jsonl": self._jsonl, ".parquet": self._parquet, ".txt": self._txt}[self.path.suffix]
        yield from reader()

    def _jsonl(self):
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                where = f"line {number}"
                if not raw.strip():
                    yield Skip(where, None, "blank line")
                    continue
                try:
                    item = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    yield Skip(where, None, f"invalid JSON: {err}")
                    continue
                if not isinstance(item, dict):
                    yield Skip(where, None, "record is not a JSON object")
                    continue
                yield self._record(item.get(self.id_field), item.get(self.text_field, MISSING), where, number)

    def _parquet(self):
        import pyarrow.parquet as pq

        table = pq.ParquetFile(self.path)
        missing = {self.text_field} - set(table.schema_arrow.names)
        if missing:
            raise ValueError(f"shard: {self.path} has no column {self.text_field!r} (--text-field)")
        columns = [c for c in (self.id_field, self.text_field) if c in table.schema_arrow.names]
        row = 0
        for batch in table.iter_batches(columns=columns, batch_size=256):
            data = batch.to_pydict()
            for index in range(batch.num_rows):
                row += 1
                ident = data[self.id_field][index] if self.id_field in data else None
                yield self._record(ident, data[self.text_field][index], f"row {row}", row)

    def _txt(self):
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield Skip(self.path.name, self.path.stem, f"not valid UTF-8: {err}")
            return
        yield self._record(self.path.stem, text, self.path.name, 1)

    def _record(self, ident, text, where: str, number: int) -> Record | Skip:
        ident = str(ident) if ident not in (None, "") else f"{self.path.stem}-{number}"
        normalized = check_text(ident, text, where, self.text_field)
        if isinstance(normalized, Skip):
            return normalized
        if not normalized:
            return Skip(where, ident, "empty document")
        return Record(ident, normalized, where, kind_of(ident))


MISSING = object()  # a record without the text field


def check_text(ident: str, text, where: str, text_field: str) -> str | Skip:
    """A record's text, normalized, or the Skip that says why it can't be used."""
    if text is MISSING:
        return Skip(where, ident, f"no {text_field!r} field")
    if not isinstance(text, str):
        return Skip(where, ident, f"{text_field!r} is not a string ({type(text).__name__})")
    try:
        return normalize_text(text)
    except InvalidUnicodeError as err:
        return Skip(where, ident, f"text is not valid Unicode: {err}")
