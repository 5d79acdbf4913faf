import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample" / "sample.jsonl"


@pytest.fixture(scope="session")
def sample_docs() -> dict[str, str]:
    import json

    with CORPUS.open(encoding="utf-8") as handle:
        return {item["id"]: item["text"] for item in map(json.loads, handle)}
