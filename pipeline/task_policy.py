"""What the DAGs share: the retry policy of tasks that touch the network, and the dataset Asset.

Read when a DAG file is parsed; standard library only (Airflow's own `Asset` is imported when
asked for, by the DAG files that already import Airflow).
"""

from __future__ import annotations

import os
from datetime import timedelta

# S3, Dask, model endpoints: retried with a delay that doubles from GLYPH_RETRY_DELAY_S.
NETWORK = dict(retries=3, retry_delay=timedelta(seconds=int(os.environ.get("GLYPH_RETRY_DELAY_S", "30"))),
               retry_exponential_backoff=True)


def corpus_asset():
    """The `glyph_corpus` Asset: the refresh DAG publishes it, the train DAG is scheduled on it."""
    from airflow.sdk import Asset

    return Asset(name="glyph_corpus", uri=os.environ.get("GLYPH_DATASET_URI", "file:///glyph/corpus"))
