"""Pre-training through real DeepSpeed on the CPU: runs, learns, resumes, 2 ranks agree, bad samples skipped."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main

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


def train(setup, out, *extra, data="pages", launcher=None, timeout=600, output=None,
          metrics_from="out", module_flag=True):
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"),
           "OMP_NUM_THREADS": "1"}
    args = (["-m"] if module_flag else []) + [
        "training.pretrain", "--model", str(setup / "model"), "--data", str(setup / data),
        "--output-dir", output or str(out), "--max-length", "1024", *extra]
    command = (launcher or [sys.executable]) + args
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    if metrics_from is None:
        return None
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_repeated_batch_and_model_exports(setup, tmp_path):
    metrics = train(setup, tmp_path / "run", "--max-steps", "25", "--learning-rate", "0.003",
                    "--tasks", "ocr", "--save-every", "25")
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 25 and losses[-1] < losses[0] - 1.0, losses
    assert {"lr", "samples_per_s", "tokens_per_s", "mfu"} <= set(metrics[0])
    from training.models import load_model_and_processor

    model, processor = load_model_and_processor(str(tmp_path / "run" / "model"))
    assert type(model).__name__ == "Glm4vForConditionalGeneration"


def test_resume_continues_at_the_same_step_and_data_position(setup, tmp_path):
    whole = train(setup, tmp_path / "whole", "--max-steps", "6", "--save-every", "3", data="many-pages")
    first = train(setup, tmp_path / "split", "--max-steps", "3", "--save-every", "3", data="many-pages")
    resumed = train(setup, tmp_path / "split", "--max-steps", "6", "--save-every", "3", data="many-pages")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5, 6]  # metrics.jsonl appended: 1-3, then 4-6
    assert [m["task"] for m in resumed] == [m["task"] for m in whole], "same data position after resume"
    for a, b in zip(resumed[3:], whole[3:]):
        assert a["loss"] == pytest.approx(b["loss"], abs=2e-3)
    assert len(first) == 3


@pytest.mark.parametrize("name", ["torchrun", "deepspeed"])
def test_two_ranks_under_a_launcher_keep_equal_parameters(setup, tmp_path, name):
    from tests.support.s3 import free_port

    port = str(free_port())  # port 0 leaves the two ranks waiting for each other
    launcher = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port],
        "deepspeed": [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", port,
                      "--module"],
    }[name]
    # the deepspeed launcher takes the module after --module, torchrun after -m
    train(setup, tmp_path / "ddp", "--max-steps", "3", "--save-every", "3", data="many-pages", launcher=launcher,
          timeout=300, module_flag=name == "torchrun")
    digests = {p.read_text() for p in (tmp_path / "ddp").glob("params-rank*.sha256")}
    assert len(list((tmp_path / "ddp").glob("params-rank*.sha256"))) == 2 and len(digests) == 1


def test_bad_tar_member_is_skipped_with_a_reason(setup, tmp_path, caplog):
    from training.data.stream import TaskStream
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
    stream = TaskStream(str(bad), processor, TaskBuilder({"ocr": 1.0}, max_pages=1), 2048, epochs=1)
    with caplog.at_level("WARNING"):
        samples = list(stream)
    assert samples, "the rest of the shard is still read"
    assert "skipping bad sample" in caplog.text


def test_checkpoints_and_model_go_to_s3_and_a_run_resumes_from_there(setup, tmp_path, s3):
    s3.proxy.heal()
    env_keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    assert all(k in os.environ for k in env_keys)
    out = s3.uri("train-out")
    train(setup, Path("/nonexistent"), "--max-steps", "2", "--save-every", "2", data="many-pages",
          output=out, metrics_from=None)
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="train-out/")["Contents"]}
    assert "train-out/checkpoints/latest" in keys and "train-out/model/config.json" in keys
    assert any(k.startswith("train-out/checkpoints/step00000002/") for k in keys)
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
               str(setup / "many-pages"), "--output-dir", str(out), "--max-length", "1024", "--save-every", "2"]
    run = subprocess.Popen(command + ["--max-steps", "200"], start_new_session=True, env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.exists() and latest.read_text().strip() >= "step00000004"):
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    saved = int(latest.read_text().strip()[4:])
    assert saved >= 4
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    result = subprocess.run(command + ["--max-steps", str(saved + 2)], capture_output=True, text=True, timeout=600,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[len(logged):] == [saved + 1, saved + 2], "resumed after the last checkpoint"
    assert (out / "model" / "config.json").exists()
