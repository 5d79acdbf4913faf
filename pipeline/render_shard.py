"""`pipeline render --shard`: one input shard -> WebDataset page shards + summary.

Steps, in order: read records (ShardReader), render each (Renderer), write
each page (PageShardWriter), then documents.jsonl (per-document tokens and
compression), summary.json, the resolved config and preview.png.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io.readers import Record, ShardReader, Skip
from pipeline.io.wds_writer import PageShardWriter, sample_key
from pipeline.render.config import RenderConfig
from pipeline.render.document import Renderer
from pipeline.render.tokens import TextTokenizer


@dataclass
class RenderStats:
    """Counters for one run: what went in, what came out, what was skipped and why."""

    documents: int = 0
    pages: int = 0
    characters: int = 0
    text_tokens: int = 0
    visual_tokens: int = 0
    missing_glyphs: int = 0
    seconds: float = 0.0
    styles: dict[str, int] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    def add(self, doc: dict) -> None:
        self.documents += 1
        for key in ("pages", "characters", "text_tokens", "visual_tokens", "missing_glyphs"):
            setattr(self, key, getattr(self, key) + doc[key])
        self.styles[doc["style"]] = self.styles.get(doc["style"], 0) + 1

    def summary(self) -> dict:
        return {
            "documents": self.documents,
            "pages": self.pages,
            "characters": self.characters,
            "text_tokens": self.text_tokens,
            "visual_tokens": self.visual_tokens,
            "compression_ratio": _ratio(self.text_tokens, self.visual_tokens),
            "missing_glyphs": self.missing_glyphs,
            "seconds": round(self.seconds, 3),
            "pages_per_second": round(self.pages / self.seconds, 2) if self.seconds else 0.0,
            "styles": self.styles,
            "skipped_count": len(self.skipped),
            "skipped": self.skipped,
        }


class ShardRenderer:
    """Renders records into WebDataset page shards in one folder.

    Pages are encoded and written as they are drawn, so memory holds one
    document's layout and one page's pixels, whatever the document's length.
    Each document's config comes from `styles` (FixedStyle, StyleMixture or
    SampledStyle), keyed by the document id, so a re-run draws the same ones.
    """

    def __init__(self, out_dir: str | Path, styles, backend: str = "skia", prefix: str = "pages",
                 tokenizer: str | None = None, max_shard_bytes: int = 1 << 30, preview_pages: int = 12):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.styles, self.backend = styles, backend
        self.tokenizer = TextTokenizer(tokenizer) if tokenizer else TextTokenizer()
        self.writer = PageShardWriter(self.out_dir, prefix, max_bytes=max_shard_bytes)
        self.stats = RenderStats()
        self.documents: list[dict] = []
        self.preview: list = []
        self.preview_pages = preview_pages
        self._renderers: dict[RenderConfig, Renderer] = {}
        self._used_ids: set[str] = set()

    def run(self, records, total: int | None = None, progress: bool = True) -> dict:
        """Render every record; `progress=False` (a Dask worker's shard) draws no bar of its own."""
        from tqdm import tqdm

        started = time.perf_counter()
        for item in tqdm(records, total=total, unit="doc", disable=None if progress else True, file=sys.stderr):
            if isinstance(item, Skip):
                self.stats.skipped.append(item.to_dict())
                continue
            doc = self.render_record(item)
            if doc is None:
                continue
            self.stats.add(doc)
            self.documents.append(doc)
        self.stats.seconds = time.perf_counter() - started
        shards = self.writer.close()
        return {**self.stats.summary(), "backend": self.backend, "tokenizer": self.tokenizer.spec,
                "shards": shards}

    def render_record(self, record: Record) -> dict | None:
        """Render one document, write its pages; return its per-document stats (None: skipped)."""
        source_id = _unique_id(record, self._used_ids)
        renderer = self._renderer(self.styles.choose(source_id, record.kind, record.text))
        try:  # layout first: a document that cannot be laid out is skipped before any page is written
            layouts = renderer.layout(record.text, record.id)
        except Exception as err:  # noqa: BLE001 - counted with its reason, the shard goes on
            self.stats.skipped.append(Skip(record.where, record.id, f"layout failed: {type(err).__name__}: {err}")
                                      .to_dict())
            return None
        config = renderer.cfg.to_glyph_dict()
        doc = {"source_id": record.id, "where": record.where, "style": renderer.cfg.style, "pages": 0,
               "characters": len(record.text), "text_tokens": self.tokenizer.count(record.text),
               "visual_tokens": 0, "missing_glyphs": 0, **record.extra}
        for page in renderer.iter_pages(record.text, layouts):
            meta = {"source_id": record.id, **record.extra, "style": renderer.cfg.style, "backend": self.backend,
                    **page.metadata(), "config": config}
            self.writer.write(sample_key(source_id, page.index), page.png(), page.text, meta)
            if len(self.preview) < self.preview_pages:
                self.preview.append(page.pixels)
            doc["pages"] += 1
            doc["visual_tokens"] += page.visual_tokens
            doc["missing_glyphs"] += page.missing_glyphs
        doc["compression_ratio"] = _ratio(doc["text_tokens"], doc["visual_tokens"])
        return doc

    def _renderer(self, cfg: RenderConfig) -> Renderer:
        renderer = self._renderers.get(cfg)
        if renderer is None:
            if len(self._renderers) > 16:  # sampled styles: a new config per document
                self._renderers.clear()
            renderer = self._renderers[cfg] = Renderer(cfg, self.backend, self.tokenizer)
        return renderer


def render_records(records, out_dir: str | Path, styles, backend: str = "skia", total: int | None = None,
                   **options) -> dict:
    """Render Record/Skip items into out_dir with summary.json, documents.jsonl, config and preview."""
    from pipeline.preview import contact_sheet

    job = ShardRenderer(out_dir, styles, backend, **options)
    summary = job.run(records, total)
    out = job.out_dir
    with (out / "documents.jsonl").open("w", encoding="utf-8") as handle:
        for doc in job.documents:
            handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    (out / "render_config.json").write_text(json.dumps(styles.describe(), indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    contact_sheet(job.preview).save(out / "preview.png", compress_level=1)  # a look, not an archive
    return summary


def render_shard(shard: str | Path, out_dir: str | Path, styles, backend: str = "skia",
                 id_field: str = "id", text_field: str = "text", **kwargs) -> dict:
    reader = ShardReader(shard, id_field, text_field)
    total = _count_lines(reader.path) if reader.path.suffix == ".jsonl" else None
    return render_records(reader, out_dir, styles, backend, total, prefix=reader.path.stem.replace(".", "_"),
                          **kwargs)


def _unique_id(record: Record, used: set[str]) -> str:
    """The record's id, made unique within this shard if an id repeats."""
    ident, copy = record.id, 1
    while ident in used:
        copy += 1
        ident = f"{record.id}#{copy}"
    used.add(ident)
    return ident


def _ratio(text_tokens: int, visual_tokens: int) -> float:
    return round(text_tokens / visual_tokens, 4) if visual_tokens else 0.0


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)
