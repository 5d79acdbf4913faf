"""Checkpoints that always resume: written, committed by a pointer, only then rotated.

A checkpoint folder is complete when its trainer state and every rank's data position read back and
each file has the size its manifest (`files-rank{i}.json`, written by each node after all ranks
saved) records. `checkpoints/latest` names the newest complete one and moves (atomically, and for
s3:// uploaded last) before any older checkpoint is deleted, so a kill at any point leaves a pointer
to a complete checkpoint, or a pointer one save behind and a newer complete checkpoint.

On resume, rank 0 decides for every rank: the checkpoint `latest` names if it is complete; else the
newest complete checkpoint on disk, said in one line; a pointer that is missing, empty, garbage, a
path (`../x`), stale or names a damaged checkpoint with no complete one to fall back on is one clear
error. Folders left by a save that never reached its pointer are not resumed from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from training.errors import UsageError
from training.outputs import sync_up

POINTER = "latest"
NAME = re.compile(r"checkpoint-([0-9]{1,12})")
MANIFEST = re.compile(r"files-rank[0-9]{1,6}\.json")
MAX_JSON = 16 * 2**20  # a checkpoint's JSON files are small; a bigger one is not ours


def read_json(path: Path):
    """A small JSON file of ours, or ValueError."""
    try:
        if path.stat().st_size > MAX_JSON:
            raise ValueError(f"{path.name} is over {MAX_JSON} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path.name} unreadable ({type(err).__name__})") from None


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is complete."""
    if not folder.is_dir():
        return "missing"
    try:
        state = read_json(folder / "trainer_state.json")
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            return "damaged (trainer_state.json has no global_step)"
        position = read_json(folder / "data-position-rank0.json")
        world = position.get("world_size") if isinstance(position, dict) else None
        if not isinstance(world, int) or not 0 < world <= 1_000_000:
            return "damaged (data-position-rank0.json has no world_size)"
        for rank in range(1, world):
            read_json(folder / f"data-position-rank{rank}.json")
        for manifest in sorted(p for p in folder.iterdir() if MANIFEST.fullmatch(p.name)):
            problem = _manifest_problem(folder, read_json(manifest))
            if problem:
                return problem
    except ValueError as err:
        return f"incomplete or damaged ({err})"
    return None


def _manifest_problem(folder: Path, sizes) -> str | None:
    if not isinstance(sizes, dict):
        return "damaged (a file manifest is not a mapping)"
    for name, size in sizes.items():
        parts = Path(name).parts
        if not isinstance(size, int) or Path(name).is_absolute() or not parts or ".." in parts:
            return f"damaged (the file manifest lists {name!r})"
        path = folder / name
        if not path.is_file():
            return f"damaged ({name} missing)"
        if path.stat().st_size != size:
            return f"damaged ({name} is {path.stat().st_size} bytes, {size} were written)"
    return None


def complete_checkpoints(root: Path) -> list[Path]:
    """The complete checkpoint folders under root, newest first."""
    found = []
    for path in root.glob("checkpoint-*"):
        match = NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True) if checkpoint_problem(path) is None]


def find_checkpoint(root: Path) -> tuple[Path | None, str | None]:
    """(the checkpoint to resume from or None, a line saying why it is not the pointer's), or UsageError."""
    pointer = root / POINTER
    if not pointer.exists() and not pointer.is_symlink():
        complete = complete_checkpoints(root)
        if complete:  # killed after a save and before its pointer: that save is complete all the same
            return complete[0], f"resume: no checkpoints/{POINTER}; resuming from {complete[0].name}, " \
                                "the newest complete checkpoint"
        return None, None
    why = _pointer_problem(root, pointer)
    if why is None:
        return root / pointer.read_text(encoding="utf-8").strip(), None
    complete = complete_checkpoints(root)
    if complete:
        return complete[0], f"resume: checkpoints/{POINTER} {why}; resuming from {complete[0].name}, " \
                            "the newest complete checkpoint"
    raise UsageError(f"resume: checkpoints/{POINTER} in {root} {why}, and no complete checkpoint is there to fall "
                     "back on. Use another --output-dir to start over, or remove the checkpoints folder")


def _pointer_problem(root: Path, pointer: Path) -> str | None:
    try:
        if pointer.is_symlink() or not pointer.is_file() or pointer.stat().st_size > 256:
            return "is not a pointer file"
        text = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return "is unreadable"
    if not text:
        return "is empty"
    if not NAME.fullmatch(text):
        return f"names {text[:40]!r}, which is not a checkpoint name"
    problem = checkpoint_problem(root / text)
    return f"names {text}, which is {problem}" if problem else None


def agreed_checkpoint(root: Path, rank: int, world_size: int) -> Path | None:
    """Rank 0's choice, for every rank (nodes that stage locally may see different folders)."""
    choice: list = [None, None, None]
    if rank == 0:
        try:
            folder, note = find_checkpoint(root)
            choice = [folder.name if folder else None, note, None]
        except UsageError as err:
            choice = [None, None, str(err)]
    if world_size > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(choice, src=0)
    name, note, error = choice
    if error:
        raise UsageError(error)
    if note and rank == 0:
        print(note, flush=True)
    return root / name if name else None


def write_json(path: Path, value) -> None:
    """Written whole or not at all (a kill leaves the old file or none)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


class CheckpointSync(TrainerCallback):
    """After each checkpoint: every rank's data position, each node's file manifest, (s3://) the upload,
    then the pointer; only then older checkpoints are removed, keeping `keep` (and the pointer's)."""

    def __init__(self, cfg, local: str, progress, workers: int):
        self.cfg, self.local, self.progress, self.workers = cfg, local, progress, workers

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        name = f"checkpoint-{state.global_step}"
        root = Path(args.output_dir)
        position = {"world_size": args.world_size, "workers": self.workers, "batches": self.progress.batches,
                    "positions": {str(k): v for k, v in self.progress.positions.items()},
                    "model": self.cfg.model, "data": self.cfg.data}  # what the run trains: a resume must match
        write_json(root / name / f"data-position-rank{args.process_index}.json", position)
        dist.barrier()
        if args.local_process_index == 0:  # each node: what its ranks wrote, then the manifest of it
            sizes = {str(p.relative_to(root / name)): p.stat().st_size for p in sorted((root / name).rglob("*"))
                     if p.is_file() and not MANIFEST.fullmatch(p.name) and not p.name.endswith(".tmp")}
            sync_up(self.local, self.cfg.output_dir, 0, only=f"checkpoints/{name}")
            manifest = f"files-rank{args.process_index}.json"
            write_json(root / name / manifest, sizes)
            sync_up(self.local, self.cfg.output_dir, 0, only=f"checkpoints/{name}/{manifest}")
        dist.barrier()
        if state.is_world_process_zero:
            temporary = root / f".{POINTER}.tmp"
            temporary.write_text(name + "\n")
            os.replace(temporary, root / POINTER)
            sync_up(self.local, self.cfg.output_dir, 0, only="metrics.jsonl")
            sync_up(self.local, self.cfg.output_dir, 0, only=f"checkpoints/{POINTER}")
        dist.barrier()
        if args.local_process_index == 0:
            self.rotate(root, name, is_uploader=state.is_world_process_zero)

    def rotate(self, root: Path, newest: str, is_uploader: bool) -> None:
        """Remove all but the `save_total_limit` newest checkpoints up to the pointer's, here and on S3.
        (A later folder is a save a killed run never committed: the run overwrites it when it gets there.)"""
        newest_step = int(NAME.fullmatch(newest).group(1))
        older = sorted((int(m.group(1)), p) for p in root.glob("checkpoint-*")
                       if (m := NAME.fullmatch(p.name)) and p.is_dir() and int(m.group(1)) < newest_step)
        for _, path in older[:max(len(older) + 1 - self.cfg.save_total_limit, 0)]:
            shutil.rmtree(path, ignore_errors=True)
            if is_uploader:
                _delete_remote(self.cfg.output_dir, path.name)


def _delete_remote(output_dir: str, name: str) -> None:
    from pipeline import storage

    if not storage.is_s3(output_dir):
        return
    store = storage.get_storage(output_dir)
    for obj in list(store.list(storage.join(output_dir, "checkpoints", name) + "/")):
        store.delete(obj.uri)
