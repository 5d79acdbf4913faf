"""The tiny GLM-4.1V: built offline and deterministically, loaded by the same code path as a real model."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.render.document import Renderer
from pipeline.render.styles import load_style
from training.models import load_model_and_processor


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    assert main(["make-tiny-model", str(out)]) == 0
    return out


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_loads_and_learns_shape(tiny_model, sample_docs):
    model, processor = load_model_and_processor(str(tiny_model))
    assert type(model).__name__ == "Glm4vForConditionalGeneration"
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
    page = Renderer(load_style("best-en")).render(sample_docs["shakespeare-sonnets"][:1500]).pages[0]
    image = Image.fromarray(page.pixels).convert("RGB")
    inputs = processor(text=["<|begin_of_image|><|image|><|end_of_image|><|assistant|>" + page.text[:200]],
                       images=[image], return_tensors="pt")
    grid = inputs["image_grid_thw"][0].tolist()
    image_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert image_tokens == grid[0] * grid[1] * grid[2] // 4, "one token per 2x2 merged patches"
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    assert torch.isfinite(loss) and abs(loss.item() - np.log(len(processor.tokenizer))) < 1.0


def test_tiny_model_is_deterministic(tiny_model, tmp_path):
    assert main(["make-tiny-model", str(tmp_path / "again")]) == 0
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(tiny_model / name) == digest(tmp_path / "again" / name), name
