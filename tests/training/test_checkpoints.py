"""Checkpoints that always resume: each way `checkpoints/latest` or a checkpoint can be damaged falls back to
the newest complete checkpoint in one line, or is one error line with exit 2; kill -9 at the two moments
that matter (mid-save, and as the previous checkpoint is removed) still resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main
from training.checkpoints import find_checkpoint
from training.errors import UsageError
from tests.support.train_env import env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("checkpoints")
    assert pipeline_main(["make-tiny-model", str(root / "model")]) == 0
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": sample_docs[k][:8000]}) + "\n"
                              for k in ("shakespeare-macbeth", "milton-areopagitica")))
    assert pipeline_main(["render", "--shard", str(corpus), "--out", str(root / "pages")]) == 0
    result = pretrain(root, root / "run", "4", save_every="2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4",
                                                                               "latest"]
    return root


def command(setup: Path, out: Path, steps: str, save_every: str = "2", keep: str = "2") -> list[str]:
    return [sys.executable, "-m", "training.pretrain", "--config", "configs/train/pretrain.yaml", "--model",
            str(setup / "model"), "--data", str(setup / "pages"), "--output-dir", str(out), "--max-length", "1024",
            "--lr-scheduler", "constant", "--max-steps", steps, "--save-every", save_every, "--save-total-limit",
            keep]


def pretrain(setup: Path, out: Path, steps: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command(setup, out, steps, **kwargs), capture_output=True, text=True, timeout=600,
                          env=env(), cwd=REPO)


@pytest.fixture
def run_copy(setup, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(setup / "run", out)
    return out / "checkpoints"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_a_sound_pointer_is_taken_as_it_is(run_copy):
    assert find_checkpoint(run_copy) == (run_copy / "checkpoint-4", None)


@pytest.mark.parametrize("damage,said", [
    ("missing", "no checkpoints/latest"),
    ("empty", "is empty"),
    ("garbage", "is unreadable"),
    ("path", "not a checkpoint name"),
    ("a folder", "is not a pointer file"),
    ("stale", "names checkpoint-6, which is missing"),  # a kill between the old rotation and the pointer
    ("truncated weights", "model.safetensors is"),
    ("truncated optimizer", "optim_states.pt is"),
    ("garbage data position", "data-position-rank0.json unreadable"),
    ("manifest escapes", "the file manifest lists '../../etc/passwd'"),
])
def test_damage_falls_back_to_the_newest_complete_checkpoint_in_one_line(run_copy, damage, said):
    pointer, newest = run_copy / "latest", run_copy / "checkpoint-4"
    if damage == "missing":
        pointer.unlink()
        shutil.rmtree(newest)
    elif damage == "empty":
        pointer.write_text("")
    elif damage == "garbage":
        pointer.write_bytes(b"\xff\xfe\x00checkpoint")
    elif damage == "path":
        pointer.write_text("../../etc\n")
    elif damage == "a folder":
        pointer.unlink()
        pointer.mkdir()
    elif damage == "stale":
        pointer.write_text("checkpoint-6\n")
        shutil.rmtree(newest)
    elif damage == "truncated weights":
        truncate(newest / "model.safetensors")
    elif damage == "truncated optimizer":
        truncate(next(newest.glob("global_step4/*optim_states.pt")))
    elif damage == "garbage data position":
        (newest / "data-position-rank0.json").write_text('{"world_size": ')
    elif damage == "manifest escapes":
        manifest = newest / "files-rank0.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "../../etc/passwd": 1}))
    folder, note = find_checkpoint(run_copy)
    # a damaged pointer alone: checkpoint-4 is still complete; damage to checkpoint-4 (or its removal): checkpoint-2
    expected = "checkpoint-4" if damage in ("empty", "garbage", "path", "a folder") else "checkpoint-2"
    assert folder == run_copy / expected
    assert note.startswith("resume: ") and said in note and f"resuming from {expected}" in note, note
    assert "\n" not in note


def test_damage_with_nothing_complete_behind_it_is_an_error(run_copy):
    truncate(run_copy / "checkpoint-4" / "model.safetensors")
    shutil.rmtree(run_copy / "checkpoint-2")
    with pytest.raises(UsageError, match="names checkpoint-4, which is damaged .*no complete checkpoint"):
        find_checkpoint(run_copy)


def test_an_unfinished_first_save_with_no_pointer_starts_over(run_copy):
    (run_copy / "latest").unlink()
    shutil.rmtree(run_copy / "checkpoint-2")
    (run_copy / "checkpoint-4" / "trainer_state.json").unlink()
    assert find_checkpoint(run_copy) == (None, None)


def test_a_stale_pointer_resumes_from_the_newest_complete_checkpoint_and_trains_on(setup, run_copy):
    (run_copy / "latest").write_text("checkpoint-6\n")
    result = pretrain(setup, run_copy.parent, "6")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resume: checkpoints/latest names checkpoint-6, which is missing; resuming from checkpoint-4" \
        in result.stdout
    assert "resumed from step 4" in result.stdout and "step 6/6 loss" in result.stdout
    assert (run_copy / "latest").read_text().strip() == "checkpoint-6"
    assert sorted(p.name for p in run_copy.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_damage_with_nothing_to_fall_back_on_is_one_error_line_and_exit_2(setup, run_copy):
    truncate(run_copy / "checkpoint-4" / "model.safetensors")
    shutil.rmtree(run_copy / "checkpoint-2")
    result = pretrain(setup, run_copy.parent, "6")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no complete checkpoint" in errors[0], result.stderr[-1500:]


@pytest.mark.parametrize("moment", ["mid-save", "rotation"])
def test_kill_minus_nine_at_the_moments_that_matter_still_resumes(setup, tmp_path, moment):
    """Keeping one checkpoint, saving every step: kill as a new checkpoint folder appears (mid-save), or as
    the previous one disappears (the rotation: the old order deleted it before the pointer moved)."""
    out = tmp_path / "killed"
    checkpoints = out / "checkpoints"
    run = subprocess.Popen(command(setup, out, "200", save_every="1", keep="1"), start_new_session=True, env=env(),
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, seen = time.time() + 300, set()
    try:
        while time.time() < deadline and run.poll() is None:
            now = {p.name for p in checkpoints.glob("checkpoint-*")} if checkpoints.is_dir() else set()
            if (checkpoints / "latest").exists() and seen and (now - seen if moment == "mid-save" else seen - now):
                break
            seen = now if now else seen
            time.sleep(0.002)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    result = pretrain(setup, out, "12", save_every="1", keep="1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from step" in result.stdout and "step 12/12 loss" in result.stdout
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-12"]
