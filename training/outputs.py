"""Where a stage writes: a local folder, or for s3:// a local staging folder mirrored to S3.

Checkpoints and metrics are written locally and copied up (each node its own ranks' files, the
checkpoint pointer last); a run on a new machine mirrors them down first and resumes from there.
"""

from __future__ import annotations

from pathlib import Path


def local_output(output_dir: str) -> str:
    """Where a stage writes: output_dir itself, or for s3:// a local staging folder synced to it."""
    from pipeline import storage

    if not storage.is_s3(output_dir):
        return output_dir
    import hashlib
    import tempfile

    return str(Path(tempfile.gettempdir()) / "glyph-train" / hashlib.sha1(output_dir.encode()).hexdigest()[:12])


def sync_up(local: str, output_dir: str, rank: int, only: str = "") -> None:
    """Copy the staging folder (or its part `only`) to an s3:// output; local outputs need nothing.

    `rank` here is the uploader's role: pass the local rank so each node uploads what its ranks wrote.
    """
    from pipeline import storage

    if not storage.is_s3(output_dir) or rank != 0:
        return
    store = storage.get_storage(output_dir)
    root = Path(local)
    start = root / only if only else root
    paths = [start] if start.is_file() else sorted(start.rglob("*"))
    for path in paths:
        if path.is_file():
            store.upload(path, storage.join(output_dir, str(path.relative_to(root))))


def sync_down(output_dir: str, local: str) -> None:
    """Mirror an s3:// output's checkpoints and metrics into a fresh staging folder (to resume).

    S3 is the truth: whatever an earlier run left in the staging folder is dropped first.
    """
    import shutil

    from pipeline import storage

    if not storage.is_s3(output_dir):
        return
    shutil.rmtree(local, ignore_errors=True)
    store = storage.get_storage(output_dir)
    for obj in store.list(output_dir):
        relative = obj.uri[len(output_dir.rstrip("/")) + 1:]
        if relative.startswith(("checkpoints/", "metrics.jsonl")):
            target = Path(local) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                store.download(obj.uri, target)
