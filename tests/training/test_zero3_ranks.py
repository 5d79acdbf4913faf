"""Two CPU ranks (gloo) under ZeRO-3 whose batches differ: in supervised length (so in loss chunks), in
whether they hold an image, and in completion length. Every module call is a collective there, so any
call that depends on a rank's data aborts or hangs the job; these runs must train, and train exactly
as ZeRO-2 does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main
from tests.support.s3 import free_port
from tests.support.train_env import env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CHUNK = "16"  # supervised positions per loss chunk: the ranks' chunk counts differ on most steps


@pytest.fixture(scope="module")
def data(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("zero3")
    assert pipeline_main(["make-tiny-model", str(root / "model")]) == 0
    two = root / "two.jsonl"  # a play and a sonnet sequence: pages of very different fill
    two.write_text("".join(json.dumps({"id": k, "text": sample_docs[k][:12000]}) + "\n"
                           for k in ("shakespeare-macbeth", "shakespeare-sonnets")))
    assert pipeline_main(["render", "--shard", str(two), "--out", str(root / "pages")]) == 0
    play, essay, sonnets = (sample_docs[k] for k in ("shakespeare-macbeth", "milton-areopagitica",
                                                     "shakespeare-sonnets"))
    records = []
    for i in range(8):  # with no DataLoader workers, rank 0 reads records 0, 2, ..., rank 1 records 1, 3, ...
        if i % 2 == 0:  # a context rendered into a page; the answer quotes it
            context = play[2000 + 1500 * i:2700 + 1650 * i]
            records.append({"messages": [{"role": "user", "content": "Quote the first line of this passage."},
                                         {"role": "assistant", "content": context.strip().splitlines()[0]}],
                            "context": context})
        else:  # text only, answers of different lengths
            records.append({"messages": [{"role": "user", "content": "Continue: " + sonnets[500 * i:500 * i + 80]},
                                         {"role": "assistant", "content": essay[3000 * i:3060 + 3090 * i]}]})
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    # two RL prompts, so every generation batch puts the one with a page on one rank, the text one on the other
    (root / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    return root



def two_ranks(stage: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
            str(free_port()), "-m", f"training.{stage}", "--config", f"configs/train/{stage}.yaml", *args]


def run(command: list[str], timeout: int = 420) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if ("rror" in line or "Enforce" in line) and "Warning" not in line]
    assert result.returncode == 0, f"exit {result.returncode}: " + "\n".join(lines[-12:])
    return result


def kill_tree(process: subprocess.Popen) -> None:
    """kill -9 the launcher and its ranks (torchrun starts each rank in a session of its own)."""
    import psutil

    tree = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    psutil.wait_procs([p for p in map(_process, tree[1:]) if p], timeout=30)


def _process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def pretrain_args(data, out, zero, steps, save_every):
    return ["--model", str(data / "model"), "--data", str(data / "pages"), "--output-dir", str(out),
            "--max-length", "1024", "--lr-scheduler", "constant", "--max-steps", str(steps), "--save-every",
            str(save_every), "--deepspeed", f"configs/deepspeed/zero{zero}.json", "--loss-chunk-tokens", CHUNK]


@pytest.fixture(scope="module")
def pretrain_runs(data, tmp_path_factory):
    """The same 12-step pre-training under ZeRO-3 and under ZeRO-2."""
    root = tmp_path_factory.mktemp("pretrain-runs")
    runs = {}
    for zero in (3, 2):
        run(two_ranks("pretrain", *pretrain_args(data, root / f"zero{zero}", zero, 12, 12)))
        runs[zero] = metrics(root / f"zero{zero}")
    return runs


def assert_same_losses(zero3: list[dict], zero2: list[dict], steps: int) -> None:
    assert [m["step"] for m in zero3] == [m["step"] for m in zero2] == list(range(1, steps + 1))
    for a, b in zip(zero3, zero2):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-5), (a["step"], a["loss"], b["loss"])


def test_pretraining_with_uneven_loss_chunks_trains_as_zero2_does(pretrain_runs):
    zero3, zero2 = pretrain_runs[3], pretrain_runs[2]
    assert_same_losses(zero3, zero2, 12)
    uneven = [m["step"] for m in zero3 if m.get("loss_chunks_padded", 0) > 0]
    assert len(uneven) >= 8, f"the ranks' chunk counts differed only at steps {uneven}: the hazard was not forced"
    assert "loss_chunks_padded" not in zero2[0], "ZeRO-2 holds the head whole: nothing to agree on"


def test_sft_with_a_rank_that_never_has_an_image_trains_as_zero2_does(data, tmp_path):
    from training.data.sft import SftStream
    from training.models import load_model_and_processor
    from pipeline.render.styles import resolve_config

    _, processor = load_model_and_processor(str(data / "model"))
    streams = [SftStream(str(data / "sft.jsonl"), processor, resolve_config("best-en", None), 1024, rank=rank,
                         world_size=2, epochs=1) for rank in (0, 1)]
    assert all("pixel_values" in s for s in streams[0]) and not any("pixel_values" in s for s in streams[1])
    runs = {}
    for zero in (3, 2):
        out = tmp_path / f"zero{zero}"
        run(two_ranks("sft", "--model", str(data / "model"), "--data", str(data / "sft.jsonl"), "--output-dir",
                      str(out), "--max-length", "1024", "--lr-scheduler", "constant", "--max-steps", "8",
                      "--save-every", "8", "--deepspeed", f"configs/deepspeed/zero{zero}.json", "--loss-chunk-tokens",
                      "8", "--dataloader-workers", "0", "--ocr-ratio", "0"))
        runs[zero] = metrics(out)
    assert_same_losses(runs[3], runs[2], 8)
    assert sum(m.get("loss_chunks_padded", 0) > 0 for m in runs[3]) >= 6


def test_grpo_with_a_text_rank_and_an_image_rank_and_unequal_completions(data, tmp_path):
    out = tmp_path / "rl"
    run(two_ranks("rl", "--model", str(data / "model"), "--data", str(data / "rl.jsonl"), "--output-dir", str(out),
                  "--ocr-ratio", "0", "--rewards", "f1", "--learning-rate", "0.01", "--max-steps", "4",
                  "--save-every", "4", "--deepspeed", "configs/deepspeed/zero3.json", "--max-completion-length",
                  "96"))
    logged = metrics(out)
    assert [m["step"] for m in logged] == [1, 2, 3, 4]
    generated = [m for m in logged if "completions/min_length" in m]
    assert generated and any(m["completions/min_length"] < m["completions/max_length"] for m in generated), \
        "completions of unequal length"
    from training.models import load_model_and_processor

    model, _ = load_model_and_processor(str(out / "model"))
    assert type(model).__name__ == "Glm4vForConditionalGeneration"


def test_kill_minus_nine_and_resume_continue_where_uneven_chunks_used_to_abort(data, pretrain_runs, tmp_path):
    out = tmp_path / "killed"
    command = two_ranks("pretrain", *pretrain_args(data, out, 3, 200, 3))
    started = subprocess.Popen(command, start_new_session=True, env=env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not latest.exists() and started.poll() is None:
        time.sleep(0.05)
    kill_tree(started)
    saved = int(latest.read_text().strip().rsplit("-", 1)[1])
    assert 3 <= saved <= 9, saved
    result = run(two_ranks("pretrain", *pretrain_args(data, out, 3, saved + 3, 3)))
    assert f"resumed from step {saved}" in result.stdout
    resumed = {m["step"]: m["loss"] for m in metrics(out)}
    whole = {m["step"]: m["loss"] for m in pretrain_runs[3]}
    for step in range(saved + 1, saved + 4):
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-5), step


def test_a_rank_out_of_step_fails_after_ddp_timeout_not_half_an_hour(tmp_path):
    from training.config import TrainConfig

    assert TrainConfig().ddp_timeout == 600
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), str(REPO / "tests" / "support" / "stalled_rank.py"), "5", str(tmp_path / "out")]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env(), cwd=REPO)
    assert result.returncode != 0
    assert "rank 0 gave up after" in result.stdout and "Timed out" in result.stdout, result.stdout[-2000:]
    seconds = float(result.stdout.split("rank 0 gave up after ")[1].split(" s")[0])
    assert 4 <= seconds < 30, seconds
    assert time.time() - started < 100
