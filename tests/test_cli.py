"""`pipeline render` end to end: real files in, WebDataset shards out, read back with webdataset."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.cli import main
from pipeline.render.normalize import normalize_text


def read_shards(out: Path) -> list[dict]:
    urls = sorted(str(p) for p in out.glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))


def joined_by_source(samples) -> dict[str, str]:
    docs: dict[str, list] = {}
    for sample in samples:
        meta = sample["json"]
        docs.setdefault(meta["source_id"], []).append((meta["page"], sample["txt"]))
    return {k: "".join(t for _, t in sorted(v)) for k, v in docs.items()}


def test_jsonl_with_bad_lines(tmp_path, sample_docs):
    good = {"milton": sample_docs["milton-areopagitica"][:6000], "poems.zh": sample_docs["song100-zh"][:3000],
            "dup": "same id twice, first", "crlf": "a\r\nb\r\n\u00adc\u200b"}
    lines = [json.dumps({"id": "milton", "text": good["milton"]}),
             "{not json",
             json.dumps({"id": "no-text", "body": "x"}),
             json.dumps({"id": "poems.zh", "text": good["poems.zh"]}),
             '{"id": "surrogate", "text": "bad \\ud800 text"}',
             json.dumps({"id": "empty", "text": "\u200b\u00ad"}),
             json.dumps({"id": "number", "text": 42}),
             json.dumps({"id": "dup", "text": good["dup"]}),
             json.dumps({"id": "dup", "text": "same id twice, second"}),
             json.dumps({"id": "crlf", "text": good["crlf"]})]
    shard = tmp_path / "in.jsonl"
    shard.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["render", "--shard", str(shard), "--out", str(out)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    reasons = {s["where"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"line 2", "line 3", "line 5", "line 6", "line 7"}
    assert reasons["line 2"].startswith("invalid JSON")
    assert "no 'text' field" in reasons["line 3"]
    assert "not valid Unicode" in reasons["line 5"]
    assert reasons["line 6"] == "empty document"
    assert "not a string" in reasons["line 7"]
    assert summary["documents"] == 5 and summary["skipped_count"] == 5
    assert (out / "preview.png").stat().st_size > 0 and (out / "render_config.json").exists()

    samples = read_shards(out)
    assert len(samples) == summary["pages"]
    assert all("." not in s["__key__"] for s in samples)
    docs = joined_by_source(samples)
    assert docs["milton"] == normalize_text(good["milton"])
    assert docs["poems.zh"] == normalize_text(good["poems.zh"])
    assert docs["crlf"] == "a\nb\nc"
    assert sum(s["json"]["source_id"] == "dup" for s in samples) == 2, "a repeated id loses nothing"
    meta = samples[0]["json"]
    for key in ("source_id", "page", "char_start", "char_end", "text_tokens", "visual_tokens", "missing_glyphs",
                "lines", "width", "height", "config"):
        assert key in meta
    assert meta["config"]["page-size"] == "595,842" and meta["style"] == "best-en"
    assert samples[0]["png"].size == (meta["width"], meta["height"])
    assert summary["compression_ratio"] > 1

    documents = [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]
    assert [d["source_id"] for d in documents] == ["milton", "poems.zh", "dup", "dup", "crlf"]
    for key in ("pages", "characters", "text_tokens", "visual_tokens"):
        assert sum(d[key] for d in documents) == summary[key], key
    by_page = {}
    for sample in samples:
        by_page.setdefault(sample["json"]["source_id"], 0)
        by_page[sample["json"]["source_id"]] += sample["json"]["visual_tokens"]
    assert by_page["milton"] == documents[0]["visual_tokens"]
    assert documents[0]["compression_ratio"] == round(documents[0]["text_tokens"] / documents[0]["visual_tokens"], 4)


def test_parquet_and_txt_and_field_names(tmp_path, sample_docs):
    table = pa.table({"doc": ["a", "b", "c"], "body": [sample_docs["shakespeare-sonnets"][:4000], None, "short"]})
    pq.write_table(table, tmp_path / "in.parquet")
    out = tmp_path / "pq"
    assert main(["render", "--shard", str(tmp_path / "in.parquet"), "--out", str(out),
                 "--id-field", "doc", "--text-field", "body", "--style", "document", "--backend", "pdf"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["documents"] == 2 and summary["skipped"][0]["where"] == "row 2"
    assert joined_by_source(read_shards(out))["c"] == "short"

    text_file = tmp_path / "play.txt"
    text_file.write_text(sample_docs["shakespeare-macbeth"][:5000])
    out = tmp_path / "txt"
    assert main(["render", "--text", str(text_file), "--out", str(out), "--style", "random", "--seed", "3"]) == 0
    samples = read_shards(out)
    assert joined_by_source(samples)["play"] == normalize_text(sample_docs["shakespeare-macbeth"][:5000])
    assert samples[0]["json"]["style"].startswith("random-")


def test_same_input_same_bytes(tmp_path, sample_docs):
    shard = tmp_path / "in.jsonl"
    shard.write_text(json.dumps({"id": "x", "text": sample_docs["cpython-textwrap.py"][:8000]}) + "\n")
    for name in ("a", "b"):
        assert main(["render", "--shard", str(shard), "--out", str(tmp_path / name), "--style", "code"]) == 0
    first, second = (read_shards(tmp_path / n) for n in ("a", "b"))
    assert [s["__key__"] for s in first] == [s["__key__"] for s in second]
    assert (tmp_path / "a" / "in-000000.tar").read_bytes() == (tmp_path / "b" / "in-000000.tar").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--shard", "missing.jsonl"], "does not exist"),
    (["--shard", "x.csv"], "unsupported file type"),
    (["--shard", "{shard}", "--style", "nope"], "unknown style"),
    (["--shard", "{shard}", "--backend", "cairo"], "unknown backend"),
    (["--shard", "{shard}", "--config", "missing.json"], "does not exist"),
])
def test_clear_errors(tmp_path, capsys, args, message):
    shard = tmp_path / "ok.jsonl"
    shard.write_text('{"id": "a", "text": "b"}\n')
    (tmp_path / "x.csv").write_text("a,b\n")
    args = [a.replace("{shard}", str(shard)) for a in args]
    args = [str(tmp_path / a) if a in ("missing.jsonl", "x.csv", "missing.json") else a for a in args]
    assert main(["render", *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).parent / "pipeline"
    text_file = tmp_path / "t.txt"
    text_file.write_text("hello world\n" * 50)
    result = subprocess.run([str(exe), "render", "--text", str(text_file), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pages"] == 1


def test_version_no_abbreviations_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit) as shown:
        main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("pipeline ")
    with pytest.raises(SystemExit) as refused:
        main(["render-corpus", "in", "--out", "out", "--style", "web"])  # --style is render's, not --styles
    assert refused.value.code == 2 and "unrecognized arguments: --style" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["render-corpus", "--help"])
    assert "(default: document=0.4,web=0.2,code=0.2,dark=0.2)" in capsys.readouterr().out


def test_folders_that_are_not_datasets_say_so(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["render-corpus", str(tmp_path / "plain"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is not a shard set from `pipeline shard`" in err and "Errno" not in err
    assert main(["inspect", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err
    assert "is not a finished rendered dataset" in err and "Errno" not in err


def test_render_into_a_used_folder_needs_overwrite(tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("A short document for one page.\n")
    out = tmp_path / "out"
    assert main(["render", "--text", str(doc), "--out", str(out), "--max-shard-bytes", "1000000"]) == 0
    (out / "doc-000007.tar").write_bytes(b"left from an older run")
    (out / "notes.txt").write_text("the user's own file")
    assert main(["render", "--text", str(doc), "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err and (out / "doc-000007.tar").exists()
    assert main(["render", "--text", str(doc), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.tar")) == ["doc-000000.tar"], "no stray tar from before"
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_shard_of_a_missing_input_is_an_error(tmp_path, capsys):
    assert main(["shard", str(tmp_path / "typo.jsonl"), "--out", str(tmp_path / "input")]) == 2
    assert "typo.jsonl: no such file" in capsys.readouterr().err
    assert not (tmp_path / "input").exists()
