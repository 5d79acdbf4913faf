"""`pipeline render --shard`: one input shard -> WebDataset page shards + summary.

Steps, in order: read records (ShardReader), render each (Renderer), write
each page (PageShardWriter), then summary.json, the resolved config and preview.png.
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


@dataclass
class RenderStats:
    documents: int = 0
    pages: int = 0
    characters: int = 0
    text_tokens: int = 0
    visual_tokens: int = 0
    missing_glyphs: int = 0
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)

    def add(self, document) -> None:
        self.documents += 1
        self.pages += len(document.pages)
        self.characters += len(document.text)
        self.text_tokens += document.text_tokens
        self.visual_tokens += document.visual_tokens
        self.missing_glyphs += sum(page.missing_glyphs for page in document.pages)

    def summary(self) -> dict:
        return {
            "documents": self.documents,
            "pages": self.pages,
            "characters": self.characters,
            "text_tokens": self.text_tokens,
            "visual_tokens": self.visual_tokens,
            "compression_ratio": round(self.text_tokens / self.visual_tokens, 4) if self.visual_tokens else 0.0,
            "missing_glyphs": self.missing_glyphs,
            "seconds": round(self.seconds, 3),
            "pages_per_second": round(self.pages / self.seconds, 2) if self.seconds else 0.0,
            "skipped_count": len(self.skipped),
            "skipped": self.skipped,
        }


def render_records(records, out_dir: Path, cfg: RenderConfig, backend: str = "skia", prefix: str = "pages",
                   tokenizer: str | None = None, max_shard_bytes: int = 1 << 30, total: int | None = None,
                   preview_pages: int = 12, sampler=None) -> dict:
    """Render an iterable of Record/Skip into out_dir; return the summary written there.

    With a StyleSampler, each document gets its own config, drawn from the
    sampler's seed and the document id (so a re-run draws the same ones).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    renderer = Renderer(cfg, backend, tokenizer)
    styles: dict[str, int] = {}
    writer = PageShardWriter(out_dir, prefix, max_bytes=max_shard_bytes)
    stats = RenderStats()
    preview: list = []
    used_keys: set[str] = set()
    config_dict = cfg.to_glyph_dict()
    started = time.perf_counter()
    progress = tqdm(records, total=total, unit="doc", disable=None, file=sys.stderr)
    for item in progress:
        if isinstance(item, Skip):
            stats.skipped.append(item.to_dict())
            continue
        source_id = _unique_id(item, used_keys)
        doc_renderer, doc_config = renderer, config_dict
        if sampler is not None:
            doc_renderer = Renderer(sampler.sample(source_id), backend, renderer.tokenizer)
            doc_config = doc_renderer.cfg.to_glyph_dict()
        document = doc_renderer.render(item.text, normalized=True)
        styles[doc_renderer.cfg.style] = styles.get(doc_renderer.cfg.style, 0) + 1
        for page in document.pages:
            meta = {"source_id": item.id, "style": doc_renderer.cfg.style, "backend": backend, **page.metadata(),
                    "document_pages": len(document.pages), "config": doc_config}
            writer.write(sample_key(source_id, page.index), page.png(), page.text, meta)
            if len(preview) < preview_pages:
                preview.append(page.pixels)
        stats.add(document)
        progress.set_postfix(pages=stats.pages, refresh=False)
    stats.seconds = time.perf_counter() - started
    shards = writer.close()
    summary = {**stats.summary(), "backend": backend, "tokenizer": renderer.tokenizer.spec, "styles": styles,
               "shards": shards}
    (out_dir / "render_config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    from pipeline.preview import contact_sheet

    contact_sheet(preview).save(out_dir / "preview.png")
    return summary


def render_shard(shard: str | Path, out_dir: str | Path, cfg: RenderConfig, backend: str = "skia",
                 id_field: str = "id", text_field: str = "text", **kwargs) -> dict:
    reader = ShardReader(shard, id_field, text_field)
    total = _count_lines(reader.path) if reader.path.suffix == ".jsonl" else None
    return render_records(reader, Path(out_dir), cfg, backend, prefix=reader.path.stem.replace(".", "_"),
                          total=total, **kwargs)


def _unique_id(record: Record, used: set[str]) -> str:
    """The record's id, made unique within this shard if an id repeats."""
    ident, copy = record.id, 1
    while ident in used:
        copy += 1
        ident = f"{record.id}#{copy}"
    used.add(ident)
    return ident


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)
