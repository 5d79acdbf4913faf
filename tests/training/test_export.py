"""A stage's export is laid out as a released GLM-4.1V folder: stock classes named, a video processor, the
template and stop tokens; a fresh process loads it with the stock Auto classes and generates from a page."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

FRESH = r'''
import json, sys
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
folder = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(folder)
print("model", type(model).__name__)
try:
    processor = AutoProcessor.from_pretrained(folder)
    print("processor", type(processor).__name__, type(processor.image_processor).__name__,
          type(processor.video_processor).__name__)
except ImportError as err:  # Glm4vVideoProcessor needs torchvision, which does not install beside torch here
    print("processor needs", "torchvision" if "Torchvision" in str(err) else str(err)[:200])
    processor = None
from training.models.processor import load_processor
processor = processor or load_processor(folder)  # the same files, read with the PIL image processor
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the page."}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(text=[text], images=[Image.open(sys.argv[2]).convert("RGB")], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
print("generated", out.shape[1] - inputs["input_ids"].shape[1])
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("export")
    assert pipeline_main(["make-tiny-model", str(root / "model")]) == 0
    corpus = root / "one.jsonl"
    corpus.write_text(json.dumps({"id": "sonnets", "text": sample_docs["shakespeare-sonnets"][:1500]}) + "\n")
    assert pipeline_main(["render", "--shard", str(corpus), "--out", str(root / "pages")]) == 0
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "training.pretrain", "--config", "configs/train/pretrain.yaml",
                             "--model", str(root / "model"), "--data", str(root / "pages"), "--output-dir",
                             str(root / "run"), "--max-length", "1024", "--max-steps", "1", "--save-every", "1"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text())


def test_the_export_is_laid_out_as_a_released_glm41v_folder(exported):
    from training.models.tiny import CHAT_TEMPLATE, STOP_TOKENS

    folder = exported / "run" / "model"
    config = read(folder, "config.json")
    assert config["architectures"] == ["Glm4vForConditionalGeneration"] and config["model_type"] == "glm4v"
    vision = config["vision_config"]
    for name in ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                 "tokenizer_config.json"):
        assert read(folder, name)["processor_class"] == "Glm4vProcessor", name
    assert not any("ImageOnly" in p.read_text() for p in folder.glob("*.json")), "our own class stays internal"
    image, video = read(folder, "preprocessor_config.json"), read(folder, "video_preprocessor_config.json")
    assert image["image_processor_type"] == "Glm4vImageProcessor"
    assert video["video_processor_type"] == "Glm4vVideoProcessor"
    for settings in (image, video):
        assert (settings["patch_size"], settings["temporal_patch_size"], settings["merge_size"]) == \
            (vision["patch_size"], vision["temporal_patch_size"], vision["spatial_merge_size"])
    assert image["image_mean"] == video["image_mean"] and image["image_std"] == video["image_std"]
    assert read(folder, "tokenizer_config.json")["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE.read_text()
    tokens = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in tokens}
    assert read(folder, "generation_config.json")["eos_token_id"] == [ids[t] for t in STOP_TOKENS]


def test_a_fresh_process_loads_it_with_the_stock_auto_classes_and_generates(exported):
    folder = exported / "run" / "model"
    page = next((exported / "pages").glob("preview.png"))
    result = subprocess.run([sys.executable, "-c", FRESH, str(folder), str(page)], capture_output=True, text=True,
                            timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "model Glm4vForConditionalGeneration" in lines
    assert "processor Glm4vProcessor Glm4vImageProcessor Glm4vVideoProcessor" in lines \
        or "processor needs torchvision" in lines, lines  # never a bare tokenizer
    generated = [int(line.split()[1]) for line in lines if line.startswith("generated ")]
    assert generated and 0 < generated[0] <= 6, lines
