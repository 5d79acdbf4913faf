"""pipeline.read_shards as training loaders use it: each page once per epoch across DataLoader workers and
ranks, and a webdataset pipeline that composes (.map, .batched)."""

import json

import pytest
import torch

import pipeline
from pipeline.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("reader")
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:4000]}) + "\n" for k, v in sample_docs.items()))
    assert main(["render", "--shard", str(corpus), "--out", str(root / "pages"), "--max-shard-bytes", "60000"]) == 0
    tars = sorted((root / "pages").glob("*.tar"))
    assert len(tars) >= 4, "several shards to divide"
    keys = [s["__key__"] for s in pipeline.read_shards(str(root / "pages"), decode=False)]
    return root / "pages", keys


def test_each_page_once_under_a_dataloader_with_two_workers(dataset):
    folder, keys = dataset
    loader = torch.utils.data.DataLoader(pipeline.read_shards(str(folder), decode=False), num_workers=2,
                                         batch_size=None)
    seen = [sample["__key__"] for sample in loader]
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))


def test_ranks_divide_the_shards(dataset, monkeypatch):
    folder, keys = dataset
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append({s["__key__"] for s in pipeline.read_shards(str(folder), decode=False)})
    assert seen[0] and seen[1] and not seen[0] & seen[1] and seen[0] | seen[1] == set(keys)


def test_composes_like_a_webdataset_pipeline(dataset):
    folder, keys = dataset
    texts = list(pipeline.read_shards(str(folder)).map(lambda s: (s["__key__"], s["txt"])))
    assert [k for k, _ in texts] == keys and all(isinstance(t, str) and t for _, t in texts)
    batches = list(pipeline.read_shards(str(folder), decode=False).batched(4, collation_fn=list))
    assert sum(len(b) for b in batches) == len(keys)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, sample_docs):
    """A rendered dataset mixing scripts (English, Chinese, code) and styles, as render-corpus writes it."""
    root = tmp_path_factory.mktemp("rendered")
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:5000]}) + "\n" for k, v in sample_docs.items()))
    assert main(["shard", str(corpus), "--out", str(root / "input"), "--num-shards", "2", "--dataset", "mix"]) == 0
    assert main(["render-corpus", str(root / "input"), "--out", str(root / "out"), "--workers", "1",
                 "--styles", "document,web,dark,random"]) == 0
    return root / "out"


def test_each_tar_has_a_page_index_and_lines_map_to_the_text(rendered):
    import pyarrow.parquet as pq

    manifest = json.loads((rendered / "manifest.json").read_text())
    for shard in manifest["shards"]:
        index = pq.read_table(rendered / shard["shard"].replace(".tar", ".parquet")).to_pylist()
        assert len(index) == shard["samples"] and shard["bytes"] == (rendered / shard["shard"]).stat().st_size
        assert {"key", "source_id", "page", "chars", "text_tokens", "visual_tokens", "style", "width",
                "height"} <= set(index[0])
    for sample in pipeline.read_shards(str(rendered)):
        lines, text, start = sample["json"]["lines"], sample["txt"], sample["json"]["char_start"]
        assert all(isinstance(line["start"], int) and isinstance(line["end"], int) for line in lines)
        spans = [text[line["start"] - start:line["end"] - start] for line in lines]  # offsets in the unit's text
        assert "".join(spans) == text, "each line box holds its span"
        assert all(len(line["box"]) == 4 for line in lines)


def test_datasets_reads_the_output_typed_streaming_or_not(rendered, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    manifest = json.loads((rendered / "manifest.json").read_text())
    whole = datasets.load_dataset(str(rendered), split="train", cache_dir=str(rendered.parent / "hf-cache"))
    assert len(whole) == manifest["pages"], "the dataset card gives the features"
    assert whole.features["json"]["lines"].feature["start"].dtype == "int64"
    assert whole.features["json"]["missing_chars"].feature.dtype == "string"
    assert all(isinstance(line["start"], int) for row in whole.select(range(3)) for line in row["json"]["lines"])
    first = next(iter(pipeline.read_shards(str(rendered))))
    row = next(r for r in whole if r["__key__"] == first["__key__"])
    assert row["json"] == first["json"], "every field of the page JSON survives, typed"
    streamed = datasets.load_dataset(str(rendered), split="train", streaming=True)
    assert sum(1 for _ in streamed) == manifest["pages"]
    tars = sorted(str(p) for p in rendered.glob("*.tar"))
    plain = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                                  features=pipeline.dataset_features(), cache_dir=str(rendered.parent / "hf-cache"))
    texts = {row["__key__"]: row["txt"] for row in plain}
    assert texts == {s["__key__"]: s["txt"] for s in pipeline.read_shards(str(rendered), decode=False)
                     for s in [{"__key__": s["__key__"], "txt": s["txt"].decode()}]}
