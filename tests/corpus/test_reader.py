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
