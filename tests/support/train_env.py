"""What the training tests share: the environment a training subprocess runs in (not named training.py:
scripts run from tests/support would import it in place of the training package)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env() -> dict:
    """This environment, with DeepSpeed's compiled CPU op cached in the repo and one thread per rank."""
    return {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"), "OMP_NUM_THREADS": "1"}
