"""What the DAGs share: the retry policy of tasks that touch the network, and the dataset Asset.

Read when a DAG file is parsed; standard library only (Airflow's own `Asset` is imported when
asked for, by the DAG files that already import Airflow).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

# S3, Dask, model endpoints: retried with a delay that doubles from GLYPH_RETRY_DELAY_S.
NETWORK = dict(retries=3, retry_delay=timedelta(seconds=int(os.environ.get("GLYPH_RETRY_DELAY_S", "30"))),
               retry_exponential_backoff=True)


def corpus_asset():
    """The `glyph_corpus` Asset: the refresh DAG publishes it, the train DAG is scheduled on it."""
    from airflow.sdk import Asset

    return Asset(name="glyph_corpus", uri=os.environ.get("GLYPH_DATASET_URI", "file:///glyph/corpus"))


REPO_ROOT = Path(__file__).resolve().parents[2]


def shipped(path: str) -> str:
    """A file shipped with the code (sample corpora, configs), as an absolute path: a task's working
    directory is not the repository's."""
    return str(REPO_ROOT / path)


def _absolute_root(root: str) -> str:
    root = root.strip().rstrip("/")
    if root.startswith("s3://"):
        return root
    return os.path.abspath(os.path.expanduser(root.removeprefix("file://")))


def data_root() -> str:
    """Where the DAGs write by default: GLYPH_DATA_ROOT (a folder or an s3:// prefix), else ~/glyph-data."""
    return _absolute_root(os.environ.get("GLYPH_DATA_ROOT") or "~/glyph-data")


def output_roots() -> list[str]:
    """Where a triggered run may write: GLYPH_OUTPUT_ROOTS (comma-separated folders or s3:// prefixes),
    else the data root alone."""
    roots = [r for r in os.environ.get("GLYPH_OUTPUT_ROOTS", "").split(",") if r.strip()]
    return [_absolute_root(r) for r in roots] or [data_root()]


def dask_schedulers() -> list[str]:
    """The Dask schedulers a triggered run may use (GLYPH_DASK_SCHEDULERS, comma-separated); else none, and
    every triggered render runs on a LocalCluster on its worker."""
    return [s.strip() for s in os.environ.get("GLYPH_DASK_SCHEDULERS", "").split(",") if s.strip()]


def _literal(text: str) -> str:
    """text as a regex literal that Python's `re` and JavaScript read alike (re.escape's `\\-` is not
    valid JavaScript)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}/])", r"\\\1", text)


def output_uri_pattern() -> str:
    """A trigger form's pattern: under one of output_roots(), never climbing out with `..`.

    >>> import os, re
    >>> os.environ["GLYPH_OUTPUT_ROOTS"] = "/data/glyph,s3://bucket/glyph"
    >>> [bool(re.match(output_uri_pattern(), u)) for u in ("/data/glyph/render", "file:///data/glyph",
    ...  "s3://bucket/glyph/x", "/data/glyphs", "/data/glyph/../etc", "relative/out", "s3://bucket/other")]
    [True, True, True, False, False, False, False]
    >>> del os.environ["GLYPH_OUTPUT_ROOTS"]
    """
    choices = [_literal(r) if r.startswith("s3://") else f"(file://)?{_literal(r)}" for r in output_roots()]
    return f"^(?!.*(^|/)\\.\\.(/|$))({'|'.join(choices)})(/.*)?$"


def dask_scheduler_pattern() -> str:
    """Only the configured schedulers (or nothing: a LocalCluster)."""
    return f"^({'|'.join(map(_literal, dask_schedulers()))})?$"


def style_names() -> list[str]:
    """The styles a render accepts: the shipped configs/render/*.json, and the `random` sampler."""
    folder = REPO_ROOT / "configs" / "render"
    return sorted(p.stem for p in folder.glob("*.json")) + ["random"]


def style_mixture_pattern() -> str:
    """A trigger form's pattern for NAME[=WEIGHT],...: known style names only, a bare name weighing 1.

    >>> import re
    >>> [bool(re.match(style_mixture_pattern(), s)) for s in ("web=1", "random", "document=0.4,dark", "bogus=1")]
    [True, True, True, False]
    """
    names = "|".join(map(re.escape, style_names()))
    item = f"({names})(=[0-9]*\\.?[0-9]+)?"
    return f"^{item}(,{item})*$"

