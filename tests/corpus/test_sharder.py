"""`pipeline shard`: every input format, every bad input, determinism, bounded memory."""

import gzip
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.corpus.sharder import CorpusSharder, ShardSettings, read_units, shard_name, shard_of
from pipeline.render.normalize import normalize_text


def all_units(out: Path, settings: ShardSettings, num_shards: int) -> list[dict]:
    units = []
    for index in range(num_shards):
        units += list(read_units(str(out / shard_name(settings.dataset, index))))
    return units


def write_corpus(root: Path, docs: dict[str, str]) -> Path:
    """The same documents in every supported input format."""
    root.mkdir()
    items = list(docs.items())
    lines = "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in items[:2])
    (root / "a.jsonl").write_text(lines)
    (root / "b.jsonl.gz").write_bytes(gzip.compress(json.dumps({"id": items[2][0], "text": items[2][1]}).encode()))
    (root / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        (json.dumps({"id": items[3][0], "text": items[3][1]}) + "\n").encode()))
    pq.write_table(pa.table({"id": [items[4][0]], "text": [items[4][1]]}), root / "d.parquet")
    (root / "src").mkdir()
    (root / "src" / "mod.py").write_text("def f():\n\treturn 1\n")
    (root / "src" / "notes.md").write_text("# Notes\n\nSome *markdown*.\n")
    return root


def test_every_format_and_kind(tmp_path, sample_docs):
    corpus = write_corpus(tmp_path / "corpus", sample_docs)
    settings = ShardSettings(num_shards=3, max_chars=10_000)
    summary = CorpusSharder(settings).run([str(corpus)], str(tmp_path / "out"))
    assert summary["documents"] == 7 and summary["skipped_count"] == 0
    units = all_units(tmp_path / "out", settings, 3)
    assert len(units) == summary["units"] > 7
    by_doc: dict[str, list] = {}
    for unit in units:
        by_doc.setdefault(unit["doc_id"], []).append(unit)
        assert len(unit["text"]) <= 10_000 and shard_of(unit["id"], 3) in range(3)
    for doc_id, text in sample_docs.items():
        parts = sorted(by_doc[doc_id], key=lambda u: u["unit"])
        assert "".join(u["text"] for u in parts) == normalize_text(text)
        assert [(u["start"], u["end"]) for u in parts][0][0] == 0
        assert all(a["end"] == b["start"] for a, b in zip(parts, parts[1:]))
    assert by_doc["src/mod.py"][0]["kind"] == "code" and by_doc["src/notes.md"][0]["kind"] == "text"
    assert by_doc["cpython-textwrap.py"][0]["kind"] == "code"
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert [m["shard"] for m in manifest] == [shard_name("corpus", i) for i in range(3)]
    assert sum(m["units"] for m in manifest) == len(units)
    assert sum(m["characters"] for m in manifest) == summary["characters"]


def test_same_input_same_bytes(tmp_path, sample_docs):
    corpus = write_corpus(tmp_path / "corpus", sample_docs)
    for name in ("one", "two"):
        CorpusSharder(ShardSettings(num_shards=4, max_chars=8_000)).run([str(corpus)], str(tmp_path / name))
    for index in range(4):
        name = shard_name("corpus", index)
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one" / "manifest.parquet").read_bytes() == (tmp_path / "two" / "manifest.parquet").read_bytes()


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "lines.jsonl").write_bytes(b"\n".join([
        b'{"id": "ok", "text": "fine text"}',
        b"{broken json",
        b'{"id": "no-text"}',
        b'{"id": "bytes", "text": "caf\xe9"}',  # not UTF-8
        b'{"id": "ok", "text": "same id, other text"}',
        b'{"id": "copy", "text": "fine text"}',
        b'{"id": "empty", "text": "\\u200b"}',
        b'{"id": "surrogate", "text": "\\ud800"}',
        b"[1, 2]",
    ]) + b"\n")
    (root / "zero.txt").write_bytes(b"")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (root / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(FileNotFoundError, match="missing: no such file"):  # a missing input is an error
        CorpusSharder(ShardSettings(num_shards=1)).run([str(root), str(tmp_path / "missing")], str(tmp_path / "x"))
    assert not (tmp_path / "x").exists(), "nothing published"
    summary = CorpusSharder(ShardSettings(num_shards=1)).run([str(root)], str(tmp_path / "out"))
    reasons = {(s["id"], s["reason"].split(":")[0]) for s in summary["skipped"]}
    assert summary["documents"] == 1 and summary["units"] == 1
    assert {r for _, r in reasons} >= {"invalid JSON", "no 'text' field", "duplicate id", "empty document",
                                       "text is not valid Unicode", "record is not a JSON object", "zero-byte file"}
    assert ("copy", "duplicate content of 'ok'") in reasons
    assert ("latin1.txt", "text is not valid Unicode") in reasons
    assert any("unsupported file type '.png'" in s["reason"] for s in summary["skipped"])
    assert (None, "not valid UTF-8 at byte 28") in reasons
    assert summary["skipped_count"] == 11


def test_fifty_megabyte_document_streams_in_bounded_memory(tmp_path):
    paragraph = ("All work and no play makes Jack a dull boy. " * 40 + "\n\n").encode()
    big = tmp_path / "big" / "novel.txt"
    big.parent.mkdir()
    with big.open("wb") as handle:
        for _ in range(50 * 1024 * 1024 // len(paragraph) + 1):
            handle.write(paragraph)
    size = big.stat().st_size
    settings = ShardSettings(num_shards=2, max_chars=100_000)
    tracemalloc.start()
    summary = CorpusSharder(settings).run([str(big.parent)], str(tmp_path / "out"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert summary["characters"] == size and summary["units"] > 500
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while sharding a {size / 2**20:.0f} MiB document"


def test_s3_input_and_output(s3, tmp_path, sample_docs):
    s3.proxy.heal()
    corpus = write_corpus(tmp_path / "corpus", sample_docs)
    client = s3.client()
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        client.upload_file(str(path), s3.bucket, f"sharder-raw/{path.relative_to(corpus)}")
    settings = ShardSettings(num_shards=2, max_chars=10_000)
    summary = CorpusSharder(settings).run([s3.uri("sharder-raw")], s3.uri("sharder-shards"))
    local = CorpusSharder(ShardSettings(num_shards=2, max_chars=10_000)).run([str(corpus)], str(tmp_path / "out"))
    assert summary["units"] == local["units"] and summary["characters"] == local["characters"]
    for index in range(2):
        name = shard_name("corpus", index)
        remote = [(u["id"], u["text"]) for u in read_units(s3.uri("sharder-shards", name))]
        assert remote == [(u["id"], u["text"]) for u in read_units(str(tmp_path / "out" / name))]
        assert remote, "both shards hold units"


def test_settings_are_checked():
    with pytest.raises(ValueError, match="num-shards"):
        ShardSettings(num_shards=0)
    with pytest.raises(ValueError, match="max-chars"):
        ShardSettings(max_chars=0)


def test_visual_token_budget_caps_every_unit(tmp_path, sample_docs):
    from pipeline.corpus.budget import VisualTokenBudget
    from pipeline.render.document import Renderer
    from pipeline.render.styles import load_style

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in sample_docs.items()))
    settings = ShardSettings(num_shards=2, max_chars=1_000_000, max_visual_tokens=1500)
    summary = CorpusSharder(settings).run([str(corpus)], str(tmp_path / "out"))
    units = all_units(tmp_path / "out", settings, 2)
    budget = VisualTokenBudget(load_style("best-en"), 1500)
    counts = [budget.tokens(u["text"]) for u in units]
    assert max(counts) <= 1500 and summary["units"] > len(sample_docs)
    assert sum(counts) / len(counts) > 700, "units are not needlessly small"
    rendered = Renderer(load_style("best-en")).render(units[0]["text"], normalized=True)
    assert rendered.visual_tokens == counts[0], "the layout-only count is what rendering reports"


def test_damaged_files_keep_what_was_readable_and_are_listed(tmp_path, sample_docs):
    root = tmp_path / "damaged"
    root.mkdir()
    texts = list(sample_docs.values())

    def records(prefix: str) -> bytes:
        return "".join(json.dumps({"id": f"{prefix}{i}", "text": f"{prefix}{i}: " + texts[i % len(texts)][
            i * 50:i * 50 + 3000]}) + "\n" for i in range(200)).encode()

    packed_gz, packed_zst = gzip.compress(records("g")), zstandard.ZstdCompressor().compress(records("z"))
    (root / "a-truncated.jsonl.gz").write_bytes(packed_gz[: len(packed_gz) // 2])
    (root / "b-truncated.jsonl.zst").write_bytes(packed_zst[: len(packed_zst) // 2])
    (root / "c-corrupt.jsonl.zst").write_bytes(packed_zst[:40] + b"\x00" * 64 + packed_zst[104:])
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["parquet one", "parquet two"]}), root / "d.parquet")
    data = (root / "d.parquet").read_bytes()
    (root / "d.parquet").write_bytes(data[:-12] + b"\x00" * 8 + data[-4:])  # a corrupt footer
    (root / "e-fine.jsonl").write_text(json.dumps({"id": "fine", "text": "a whole file"}) + "\n")
    summary = CorpusSharder(ShardSettings(num_shards=2)).run([str(root)], str(tmp_path / "out"))
    damaged = {Path(d["where"].split(":")[0].split("#")[0]).name: d for d in summary["damaged_files"]}
    assert sorted(damaged) == ["a-truncated.jsonl.gz", "b-truncated.jsonl.zst", "c-corrupt.jsonl.zst", "d.parquet"]
    assert "truncated" in damaged["a-truncated.jsonl.gz"]["reason"]
    assert "ends inside frame 1" in damaged["b-truncated.jsonl.zst"]["reason"]
    assert "corrupt" in damaged["c-corrupt.jsonl.zst"]["reason"] and damaged["d.parquet"]["kept_records"] == 0
    kept_gz = damaged["a-truncated.jsonl.gz"]["kept_records"]
    kept_zst = damaged["b-truncated.jsonl.zst"]["kept_records"]
    assert 20 < kept_gz < 200 and 20 < kept_zst < 200, "the records before the break are kept"
    assert damaged["a-truncated.jsonl.gz"]["where"].endswith(f":{kept_gz + 1}"), "where it broke"
    assert summary["documents"] == kept_gz + kept_zst + 1, "the run went on with the other files"
    on_disk = json.loads((tmp_path / "out" / "sharding.json").read_text())
    assert on_disk["damaged_files"] == summary["damaged_files"]
    assert on_disk["skip_reasons"]["damaged file"] == 4


def test_resharding_an_existing_folder(tmp_path, sample_docs):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:5000]}) + "\n" for k, v in sample_docs.items()))
    out = tmp_path / "shards"
    first = CorpusSharder(ShardSettings(num_shards=4)).run([str(corpus)], str(out))
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = CorpusSharder(ShardSettings(num_shards=4)).run([str(corpus)], str(out))
    assert again["unchanged"] and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    with pytest.raises(ValueError, match=r"other settings \(settings\.num_shards|num_shards: 4 -> 2") as caught:
        CorpusSharder(ShardSettings(num_shards=2)).run([str(corpus)], str(out))
    assert "--overwrite" in str(caught.value)
    with corpus.open("a") as handle:
        handle.write(json.dumps({"id": "new", "text": "a document added since"}) + "\n")
    with pytest.raises(ValueError, match="the inputs changed since"):
        CorpusSharder(ShardSettings(num_shards=4)).run([str(corpus)], str(out))
    summary = CorpusSharder(ShardSettings(num_shards=2)).run([str(corpus)], str(out), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [shard_name("corpus", i) for i in range(2)] + ["manifest.parquet", "sharding.json"]), \
        "no shard file of the earlier sharding is left to mix in"
    assert summary["documents"] == first["documents"] + 1


def test_more_shards_than_open_files_allowed(tmp_path, sample_docs):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:20000]}) + "\n" for k, v in sample_docs.items()))
    import subprocess
    import sys

    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64));"
              "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, "shard", str(corpus), "--out", str(tmp_path / "out"),
                             "--num-shards", "300", "--max-chars", "2000"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "sharding.json").read_text())
    assert summary["num_shards"] == 300 and len(list((tmp_path / "out").glob("*.jsonl.gz"))) == 300
    assert sum(s["units"] for s in summary["shards"]) == summary["units"]
    with pytest.raises(ValueError, match=r"num-shards: must be in \[1, 100000\]"):
        ShardSettings(num_shards=100_001)
