"""SFT data and encoding: rendered contexts, <image> placeholders, auxiliary OCR, masked labels."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.cli import main as pipeline_main
from pipeline.render.styles import load_style
from training.data.encode import IGNORE, PromptTooLong, encode
from training.data.sft import SftStream
from training.data.tasks import TaskSample
from training.models import load_model_and_processor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-sft") / "model"
    assert pipeline_main(["make-tiny-model", str(out)]) == 0
    return out, load_model_and_processor(str(out))[1]


def test_labels_cover_only_the_target(tiny):
    _, processor = tiny
    image = Image.new("RGB", (300, 200), "white")
    sample = TaskSample("ocr", [image, "some text"], "the answer", "k", "Read it.")
    encoded = encode(sample, processor, max_length=4096)
    labels, ids = encoded["labels"][0], encoded["input_ids"][0]
    target = processor.tokenizer("the answer", add_special_tokens=False)["input_ids"] + [
        processor.tokenizer.eos_token_id]
    assert labels[labels != IGNORE].tolist() == target
    assert (labels[ids == processor.image_token_id] == IGNORE).all()
    assert ids[: len(ids) - len(target)].tolist()[-1] == processor.tokenizer.convert_tokens_to_ids("<|assistant|>")
    short = encode(sample, processor, max_length=len(ids) - 3)
    assert short["input_ids"].shape[1] == len(ids) - 3, "too long: the target is truncated"
    with pytest.raises(PromptTooLong):
        encode(sample, processor, max_length=10)


def test_sft_stream_renders_contexts_and_mixes_ocr(tiny, tmp_path, sample_docs):
    _, processor = tiny
    page = tmp_path / "page.png"
    Image.new("RGB", (280, 280), "white").save(page)
    records = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                             {"role": "assistant", "content": f"<think>look</think>answer {i}"}],
                "context": sample_docs["milton-areopagitica"][i * 900:(i + 1) * 900]} for i in range(6)]
    records.append({"messages": [{"role": "user", "content": "<image>What is shown?"},
                                 {"role": "assistant", "content": "a blank page"}], "images": [str(page)]})
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    stream = iter(SftStream(str(data), processor, load_style("best-en"), 4096, ocr_ratio=0.5, seed=1))
    batch = [next(stream) for _ in range(7)]
    assert {b["task"] for b in batch} == {"sft", "ocr"}
    for b in batch:
        assert "pixel_values" in b and (b["input_ids"] == processor.image_token_id).any()
    sft = [b for b in batch if b["task"] == "sft"]
    decoded = processor.tokenizer.decode(sft[0]["labels"][0][sft[0]["labels"][0] != IGNORE])
    assert decoded.startswith("<think>look</think>answer")


def test_sft_stage_runs(tiny, tmp_path):
    model, _ = tiny
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
    result = subprocess.run([sys.executable, "-m", "training.sft", "--config", "configs/train/sft.yaml",
                             "--model", str(model), "--output-dir", str(tmp_path / "sft"), "--max-steps", "3"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert (tmp_path / "sft" / "model" / "config.json").exists()
