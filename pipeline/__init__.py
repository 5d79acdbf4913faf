"""Glyph data pipeline: long text in, rendered page images with exact OCR targets out."""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent


def read_shards(uri, decode: bool = True, shuffle: bool = False, seed: int = 0, split: bool = True):
    """Stream rendered samples from local or S3 shards, each once per epoch across ranks and DataLoader
    workers; a webdataset pipeline (`.map`, `.batched`, ...). See pipeline.corpus.reader."""
    from pipeline.corpus.reader import read_shards as _read_shards

    return _read_shards(uri, decode=decode, shuffle=shuffle, seed=seed, split=split)


def dataset_features():
    """`datasets.Features` of rendered samples, for `load_dataset("webdataset", data_files=..., features=...)`."""
    from pipeline.corpus.render_corpus import dataset_features as _features

    return _features()
