"""Raw corpus readers: JSONL (plain, .gz, .zst), Parquet, folders of text and source files.

Inputs are local paths or s3:// URIs (objects or prefixes), read in sorted
order so the same input always gives the same documents. Each document comes
out as a stream of normalized text chunks, so a 50 MB text file never sits in
memory whole; a bad file or record comes out as a Skip with its reason. A file
that breaks part-way (a truncated or corrupt .gz, .zst or Parquet file) keeps
the records read before the break and comes out as a DamagedFile saying where.
"""

from __future__ import annotations

import codecs
import gzip
import json
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import zstandard

from pipeline import storage
from pipeline.io.kinds import TEXT_EXTENSIONS, kind_of
from pipeline.io.readers import MISSING, DamagedFile, Skip, check_text
from pipeline.render.normalize import InvalidUnicodeError, check_unicode, normalize_text

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")
READ_CHUNK = 1 << 20  # bytes read from a text file at a time


@dataclass
class RawDocument:
    id: str
    where: str
    kind: str  # "code" or "text": picks the default render style
    chunks: Iterable[str]  # the normalized text, in pieces; raises InvalidUnicodeError if bad


class CorpusReader:
    """Documents from one or more inputs; `id_field` and `text_field` name JSONL/Parquet columns."""

    def __init__(self, inputs: list[str], id_field: str = "id", text_field: str = "text"):
        self.inputs, self.id_field, self.text_field = inputs, id_field, text_field

    def __iter__(self) -> Iterator[RawDocument | Skip]:
        for input_uri in map(storage.absolute, self.inputs):
            objects = storage.list_uris(input_uri)
            if not objects:  # a mistyped path must not shard into an empty dataset that renders and verifies
                raise FileNotFoundError(f"input {input_uri}: no such file, or an empty folder")
            for obj in objects:
                yield from self._read_object(input_uri, obj)

    def _read_object(self, root: str, obj: storage.ObjectInfo):
        name = obj.uri.rsplit("/", 1)[-1]
        relative = obj.uri[len(root.rstrip("/")) + 1:] if obj.uri != root else name
        lower = name.lower()
        if obj.size == 0:
            yield Skip(obj.uri, None, "zero-byte file")
        elif lower.endswith(JSONL_SUFFIXES):
            with _local_copy(obj.uri) as path:
                yield from self._jsonl(path, obj.uri)
        elif lower.endswith(".parquet"):
            with _local_copy(obj.uri) as path:
                yield from self._parquet(path, obj.uri)
        elif PurePosixPath(lower).suffix in TEXT_EXTENSIONS:
            with _local_copy(obj.uri) as path:
                yield RawDocument(relative or name, obj.uri, kind_of(name), _text_chunks(path))
        else:
            yield Skip(obj.uri, None, f"unsupported file type {PurePosixPath(name).suffix or name!r}")

    def _jsonl(self, path: Path, uri: str):
        number, kept = 0, 0
        try:
            for number, raw in enumerate(_jsonl_lines(path), start=1):
                item = self._json_record(raw, f"{uri}:{number}", f"{PurePosixPath(uri).name}:{number}")
                if item is not None:
                    kept += not isinstance(item, Skip)
                    yield item
        except DAMAGE_ERRORS as err:
            yield DamagedFile(f"{uri}:{number + 1}", None, f"damaged file: {_damage(err)}; kept the {kept} "
                              f"records of its first {number} lines", kept)

    def _json_record(self, raw: bytes, where: str, fallback_id: str):
        if not raw.strip():
            return None
        try:
            item = json.loads(raw)
        except UnicodeDecodeError as err:
            return Skip(where, None, f"not valid UTF-8 at byte {err.start}")
        except json.JSONDecodeError as err:
            return Skip(where, None, f"invalid JSON: {str(err)[:120]}")
        if not isinstance(item, dict):
            return Skip(where, None, "record is not a JSON object")
        return self._record(item.get(self.id_field), item.get(self.text_field, MISSING), where, fallback_id)

    def _parquet(self, path: Path, uri: str):
        import pyarrow as pa

        row = kept = 0
        try:
            for row, item in self._parquet_rows(path, uri):
                kept += not isinstance(item, Skip)
                yield item
        except (pa.ArrowException, OSError) as err:
            yield DamagedFile(f"{uri}#row{row + 1}", None, f"damaged file: {type(err).__name__}: "
                              f"{str(err)[:160]}; kept the {kept} records of its first {row} rows", kept)

    def _parquet_rows(self, path: Path, uri: str):
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        names = set(table.schema_arrow.names)
        if self.text_field not in names:
            yield 0, Skip(uri, None, f"no column {self.text_field!r}")
            return
        columns = [c for c in (self.id_field, self.text_field) if c in names]
        row = 0
        for batch in table.iter_batches(columns=columns, batch_size=64):
            data = batch.to_pydict()
            for index in range(batch.num_rows):
                row += 1
                ident = data[self.id_field][index] if self.id_field in data else None
                yield row, self._record(ident, data[self.text_field][index], f"{uri}#row{row}",
                                        f"{PurePosixPath(uri).name}:{row}")

    def _record(self, ident, text, where: str, fallback_id: str) -> RawDocument | Skip:
        ident = str(ident) if ident not in (None, "") else fallback_id
        normalized = check_text(ident, text, where, self.text_field)
        if isinstance(normalized, Skip):
            return normalized
        return RawDocument(ident, where, kind_of(ident), [normalized])


class _local_copy:
    """A local path for a URI: the file itself, or a temporary download of an S3 object."""

    def __init__(self, uri: str):
        self.uri = uri
        self._temp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> Path:
        if not storage.is_s3(self.uri):
            return storage.LocalStorage.path(self.uri)
        self._temp = tempfile.TemporaryDirectory(prefix="glyph-src-")
        local = Path(self._temp.name) / self.uri.rsplit("/", 1)[-1]
        storage.get_storage(self.uri).download(self.uri, local)
        return local

    def __exit__(self, *exc) -> None:
        if self._temp is not None:
            self._temp.cleanup()


class TruncatedError(EOFError):
    pass


# What a truncated or corrupt compressed file raises part-way (OSError covers gzip's BadGzipFile).
DAMAGE_ERRORS = (EOFError, zlib.error, zstandard.ZstdError, OSError)


def _damage(err: Exception) -> str:
    if isinstance(err, EOFError):
        return f"truncated ({err})"
    return f"corrupt ({type(err).__name__}: {err})"


def _jsonl_lines(path: Path) -> Iterator[bytes]:
    """The file's lines, decompressed; a truncated or corrupt file raises one of DAMAGE_ERRORS part-way."""
    name = path.name.lower()
    if name.endswith(".zst"):
        yield from _split_lines(_zstd_blocks(path))
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        yield from handle


def _zstd_blocks(path: Path) -> Iterator[bytes]:
    """Decompressed blocks of every frame; a stream that ends inside a frame is truncated, not finished
    (zstandard's stream reader returns what it has and ends quietly)."""
    decompressor = zstandard.ZstdDecompressor()
    frame, fed, frames = decompressor.decompressobj(), False, 0
    with path.open("rb") as handle:
        while block := handle.read(READ_CHUNK):
            while block:
                yield frame.decompress(block)
                fed = True
                if not frame.eof:
                    break
                frames += 1
                block = frame.unused_data  # the next frame starts here
                frame, fed = decompressor.decompressobj(), False
    if fed:
        raise TruncatedError(f"the zstd stream ends inside frame {frames + 1}")


def _split_lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    pending = b""
    for block in blocks:
        pending += block
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def _text_chunks(path: Path) -> Iterator[str]:
    """Decode and normalize a text file piece by piece (strict UTF-8)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def pieces():
        offset = 0
        with path.open("rb") as handle:
            while block := handle.read(READ_CHUNK):
                try:
                    yield decoder.decode(block)
                except UnicodeDecodeError as err:
                    raise InvalidUnicodeError(f"not valid UTF-8 at byte {offset + err.start}") from None
                offset += len(block)
        try:
            yield decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            raise InvalidUnicodeError(f"not valid UTF-8: truncated sequence at the end ({err.reason})") from None

    return normalize_stream(pieces())


def normalize_stream(pieces: Iterable[str], max_carry: int = 1 << 20) -> Iterator[str]:
    """normalize_text over a text given in pieces, cut only where normalization cannot reach across.

    A cut goes after a newline (nothing composes across one) or, in a very long
    line, before an ASCII character other than CR/LF (never the second half of
    a composition or of CRLF). Joined, the output equals normalize_text(whole).
    """
    carry = ""
    for piece in pieces:
        buffer = carry + piece
        cut = buffer.rfind("\n") + 1
        if cut == 0 and len(buffer) > max_carry:
            cut = _safe_cut(buffer)
        if cut > 0:
            check_unicode(buffer[:cut])
            yield normalize_text(buffer[:cut])
        carry = buffer[cut:]
    if carry:
        yield normalize_text(carry)


def _safe_cut(buffer: str) -> int:
    for index in range(len(buffer) - 1, max(len(buffer) - 65536, 0), -1):
        char = buffer[index]
        if char < "\x80" and char not in "\r\n" and buffer[index - 1] != "\r":
            return index
    return 0
