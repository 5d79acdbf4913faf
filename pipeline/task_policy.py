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


def style_names() -> list[str]:
    """The styles a render accepts: the shipped configs/render/*.json, and the `random` sampler."""
    folder = Path(__file__).resolve().parent.parent / "configs" / "render"
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

