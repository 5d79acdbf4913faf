"""WebDataset output: one sample per page, written to a temporary name then published.

Tars are written with the standard library as webdataset's TarWriter writes them (members
`{key}.{ext}` in sorted order, mode 0444, owner bigdata, a fixed mtime, a stream tar), not through
it: importing webdataset imports torch, 0.8 s of every `pipeline render`'s start-up. The readers
(pipeline.corpus.reader) still use webdataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(source_id: str, page: int) -> str:
    """A WebDataset-safe key (no dots, no slashes) that stays unique per id and page.

    >>> sample_key("books/war.and.peace", 3)
    'books_war_and_peace-44bd0712-00003'
    """
    safe = _UNSAFE.sub("_", source_id).strip("_")[:64] or "doc"
    digest = hashlib.sha1(source_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe}-{digest}-{page:05d}"


class PageShardWriter:
    """Writes `{prefix}-{index:06d}.tar` shards, rolling over at max_bytes or max_samples.

    Each tar is written as `.tar.tmp` and renamed when closed, so a tar that
    exists is complete.
    """

    def __init__(self, out_dir: str | Path, prefix: str, max_bytes: int = 1 << 30, max_samples: int = 100_000):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_bytes, self.max_samples = prefix, max_bytes, max_samples
        self.shards: list[str] = []
        self._writer = None
        self._tmp: Path | None = None
        self._bytes = self._samples = 0

    def write(self, key: str, png: bytes, text: str, meta: dict) -> None:
        if self._writer is None or self._bytes >= self.max_bytes or self._samples >= self.max_samples:
            self._roll()
        body = json.dumps(meta, ensure_ascii=False).encode()
        self._writer.write(key, {"json": body, "png": png, "txt": text.encode("utf-8")})
        self._bytes += len(png) + len(body) + len(text) + 1536
        self._samples += 1

    def close(self) -> list[str]:
        self._publish()
        return self.shards

    def _roll(self) -> None:
        self._publish()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tmp = self.out_dir / (name + ".tmp")
        # A fixed mtime makes the same pages give the same tar bytes on every run.
        self._writer = _TarStream(self._tmp)
        self._bytes = self._samples = 0
        self.shards.append(name)

    def _publish(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._tmp, self.out_dir / self.shards[-1])
        self._writer = None


class _TarStream:
    """A sample-per-key tar stream, member for member what webdataset's TarWriter(mtime=0) writes."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")
        self.tar = tarfile.open(fileobj=self.file, mode="w|")

    def write(self, key: str, parts: dict[str, bytes]) -> None:
        for ext in sorted(parts):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(parts[ext]), 0, 0o444
            info.uname = info.gname = "bigdata"
            self.tar.addfile(info, io.BytesIO(parts[ext]))

    def close(self) -> None:
        self.tar.close()
        self.file.close()
