"""Glyph data pipeline: long text in, rendered page images with exact OCR targets out."""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
