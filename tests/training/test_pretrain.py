"""Pre-training and SFT on transformers' Trainer with real DeepSpeed on the CPU: they run, learn, resume exactly,
run on 2 ranks under ZeRO-2 and ZeRO-3, skip bad samples, and fail clearly on bad input."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main
from tests.support.train_env import env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("pretrain")
    assert pipeline_main(["make-tiny-model", str(root / "model")]) == 0
    corpus = root / "one.jsonl"
    corpus.write_text(json.dumps({"id": "sonnet", "text": sample_docs["shakespeare-sonnets"][3000:3400]}) + "\n")
    assert pipeline_main(["render", "--shard", str(corpus), "--out", str(root / "pages")]) == 0
    many = root / "many.jsonl"
    many.write_text("".join(json.dumps({"id": k, "text": v[:6000]}) + "\n" for k, v in sample_docs.items()))
    assert pipeline_main(["render", "--shard", str(many), "--out", str(root / "many-pages")]) == 0
    return root



def run(stage, *args, launcher=None, timeout=600, module_flag=True):
    command = (launcher or [sys.executable]) + (["-m"] if module_flag else []) + [f"training.{stage}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)


def train(setup, out, *extra, data="pages", launcher=None, timeout=600, output=None,
          metrics_from="out", module_flag=True, stage="pretrain"):
    data_args = ["--data", str(setup / data)] if stage == "pretrain" else []
    result = run(stage, "--config", f"configs/train/{stage}.yaml", "--model", str(setup / "model"), *data_args,
                 "--output-dir", output or str(out), "--max-length", "1024", "--lr-scheduler", "constant", *extra,
                 launcher=launcher, timeout=timeout, module_flag=module_flag)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    if metrics_from is None:
        return result
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_repeated_batch_and_model_exports(setup, tmp_path):
    metrics = train(setup, tmp_path / "run", "--max-steps", "25", "--learning-rate", "0.003",
                    "--tasks", "ocr", "--save-every", "25")
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 25 and losses[-1] < losses[0] - 1.0, losses
    assert {"lr", "grad_norm", "tokens_per_s", "mfu", "eta_s", "tasks"} <= set(metrics[0])
    from training.models import load_model_and_processor

    model, processor = load_model_and_processor(str(tmp_path / "run" / "model"))
    assert type(model).__name__ == "Glm4vForConditionalGeneration"


def test_resume_continues_at_the_same_step_and_data_position(setup, tmp_path):
    whole = train(setup, tmp_path / "whole", "--max-steps", "6", "--save-every", "3", data="many-pages")
    first = train(setup, tmp_path / "split", "--max-steps", "3", "--save-every", "3", data="many-pages")
    resumed = train(setup, tmp_path / "split", "--max-steps", "6", "--save-every", "3", data="many-pages")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5, 6]  # metrics.jsonl appended: 1-3, then 4-6
    assert [m["tasks"] for m in resumed] == [m["tasks"] for m in whole], "same data position after resume"
    for a, b in zip(resumed[3:], whole[3:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4), "the same samples, in the same order"
    assert len(first) == 3


@pytest.mark.parametrize("stage,name,zero", [("pretrain", "torchrun", 2), ("pretrain", "deepspeed", 3),
                                             ("sft", "torchrun", 3), ("sft", "deepspeed", 2)])
def test_two_ranks_under_a_launcher_with_zero_2_and_3(setup, tmp_path, stage, name, zero):
    from tests.support.s3 import free_port

    port = str(free_port())  # port 0 leaves the two ranks waiting for each other
    launcher = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port],
        "deepspeed": [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", port,
                      "--module"],
    }[name]
    out = tmp_path / "ddp"
    # the deepspeed launcher takes the module after --module, torchrun after -m
    metrics = train(setup, out, "--max-steps", "3", "--save-every", "3", "--deepspeed",
                    f"configs/deepspeed/zero{zero}.json", data="many-pages", launcher=launcher, timeout=420,
                    module_flag=name == "torchrun", stage=stage)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    positions = [json.loads((out / "checkpoints" / "checkpoint-3" / f"data-position-rank{r}.json").read_text())
                 for r in (0, 1)]
    readers = [set(p["positions"]) for p in positions]
    assert readers[0] and readers[1] and not readers[0] & readers[1], "each rank reads with its own readers"
    if zero == 2:  # data-parallel ranks hold equal full parameters
        digests = {p.read_text() for p in out.glob("params-rank*.sha256")}
        assert len(list(out.glob("params-rank*.sha256"))) == 2 and len(digests) == 1
    from training.models import load_model_and_processor

    model, processor = load_model_and_processor(str(out / "model"))  # ZeRO-3: gathered on export
    assert type(model).__name__ == "Glm4vForConditionalGeneration" and processor.chat_template


def test_bad_tar_member_is_skipped_with_a_reason(setup, tmp_path, caplog):
    from training.data.stream import PageTaskStream
    from training.data.tasks import TaskBuilder
    from training.models import load_model_and_processor

    source = next((setup / "many-pages").glob("*.tar"))
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(source) as original, tarfile.open(bad / "bad-000000.tar", "w") as target:
        for index, member in enumerate(original):
            data = original.extractfile(member).read()
            if index == 0:  # the first page's image: corrupt
                data = b"\x89PNG not really"
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    _, processor = load_model_and_processor(str(setup / "model"))
    stream = PageTaskStream(str(bad), processor, TaskBuilder({"ocr": 1.0}, max_pages=1), 2048, epochs=1)
    with caplog.at_level("WARNING"):
        samples = list(stream)
    assert samples, "the rest of the shard is still read"
    assert "skipping page" in caplog.text and stream.skipped["bad page"] == 1


def test_checkpoints_and_model_go_to_s3_and_a_run_resumes_from_there(setup, tmp_path, s3):
    s3.proxy.heal()
    env_keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    assert all(k in os.environ for k in env_keys)
    out = s3.uri("train-out")
    train(setup, Path("/nonexistent"), "--max-steps", "2", "--save-every", "2", data="many-pages",
          output=out, metrics_from=None)
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="train-out/")["Contents"]}
    assert "train-out/checkpoints/latest" in keys and "train-out/model/config.json" in keys
    assert "train-out/checkpoints/checkpoint-2/data-position-rank0.json" in keys
    import shutil
    import tempfile
    import hashlib

    staging = Path(tempfile.gettempdir()) / "glyph-train" / hashlib.sha1(out.encode()).hexdigest()[:12]
    shutil.rmtree(staging)  # a new machine: only S3 has the checkpoint
    train(setup, Path("/nonexistent"), "--max-steps", "4", "--save-every", "2", data="many-pages",
          output=out, metrics_from=None)
    metrics = s3.client().get_object(Bucket=s3.bucket, Key="train-out/metrics.jsonl")["Body"].read().decode()
    assert [json.loads(line)["step"] for line in metrics.splitlines()] == [1, 2, 3, 4]
    from training.models import load_model_and_processor

    model, _ = load_model_and_processor(out + "/model")  # the next stage starts from the S3 export
    assert type(model).__name__ == "Glm4vForConditionalGeneration"


def test_kill_minus_nine_then_resume_from_the_checkpoint(setup, tmp_path):
    import signal
    import time

    out = tmp_path / "killed"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "training.pretrain", "--model", str(setup / "model"), "--data",
               str(setup / "many-pages"), "--output-dir", str(out), "--max-length", "1024", "--save-every", "2",
               "--lr-scheduler", "constant", "--max-steps", "200"]
    run = subprocess.Popen(command, start_new_session=True, env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"

    def saved_step():
        return int(latest.read_text().strip().rsplit("-", 1)[1]) if latest.exists() else 0

    deadline = time.time() + 300
    while time.time() < deadline and saved_step() < 4:
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    saved = saved_step()
    assert saved >= 4
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    stop_at = str(saved + 2)
    result = subprocess.run(command[:-1] + [stop_at], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {saved} ({saved} samples)" in result.stdout
    assert f"step {saved + 1}/{stop_at} loss" in result.stdout, "plain progress lines in a log that is no terminal"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[len(logged):][-2:] == [saved + 1, saved + 2], "resumed after the last checkpoint"
    assert (out / "model" / "config.json").exists()


def test_missing_data_and_bad_flags_are_one_line_errors(setup, tmp_path):
    result = run("pretrain", "--config", "configs/train/pretrain.yaml", "--model", str(setup / "model"), "--data",
                 str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "no rendered shards" in result.stderr and "Traceback" not in result.stderr
    result = run("sft", "--config", "configs/train/sft.yaml", "--model", str(setup / "model"), "--data",
                 str(tmp_path / "nowhere.jsonl"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    result = run("pretrain", "--config", "configs/train/pretrain.yaml", "--model", str(tmp_path / "no-model"),
                 "--data", str(setup / "pages"), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "no such folder" in result.stderr and "Traceback" not in result.stderr
    result = run("sft", "--config", "configs/train/sft.yaml", "--lr-scheduler", "wavy")
    assert result.returncode == 2 and "lr_scheduler" in result.stderr


def test_preview_shows_the_official_layout_for_pretraining(setup):
    result = subprocess.run([sys.executable, "-m", "training.preview", "--stage", "pretrain", "--config",
                             "configs/train/pretrain.yaml", "--model", str(setup / "model"), "--data",
                             str(setup / "many-pages"), "--num", "4", "--max-length", "2048"],
                            capture_output=True, text=True, timeout=300, env=env(), cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    import re

    for line in lines:
        head, _, rest = line["prompt"].partition("<|assistant|>\n")
        layout = (r"\[gMASK\]<sop><\|user\|>\n<\|begin_of_image\|><\|image\|>x\d+<\|end_of_image\|>.*"
                  r"(Read all the text in the image\(s\)\.|Continue the (text|document)\.)")
        assert re.fullmatch(layout, head, re.S), head[:300]
        assert rest == line["target"], "everything after the assistant tag is supervised, nothing before"
        assert line["prompt"].endswith(line["target"]) and line["target"].endswith("<|user|>")
        assert line["tokens"] <= 2048


def test_a_finished_run_run_again_changes_nothing_and_other_data_is_refused(setup, tmp_path):
    out = tmp_path / "twice"
    train(setup, out, "--max-steps", "2", "--save-every", "2")
    weights = (out / "model" / "model.safetensors").read_bytes()
    again = train(setup, out, "--max-steps", "2", "--save-every", "2", metrics_from=None)
    assert "already trained to step 2 of 2 and exported" in again.stdout and "step 3/" not in again.stdout
    assert (out / "model" / "model.safetensors").read_bytes() == weights
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2, "no extra step was trained"
    other = run("pretrain", "--config", "configs/train/pretrain.yaml", "--model", str(setup / "model"),
                "--data", str(setup / "many-pages"), "--output-dir", str(out), "--max-steps", "4",
                "--max-length", "1024")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert f"holds a run of --data {setup / 'pages'}" in other.stderr and "another --output-dir" in other.stderr
