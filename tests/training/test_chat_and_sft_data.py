"""Chat-template encoding and SFT data: the official GLM-4.1V layout, exact labels, every input convention."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image as PILImage

from pipeline.cli import main as pipeline_main
from pipeline.render.styles import load_style
from training.data.chat import IGNORE, ChatEncoder, Conversation, Image, PromptTooLong, Text, TemplateError, Turn
from training.data.sft import SftStream
from training.data.stream import DataError
from training.models import load_model_and_processor
from training.models.processor import load_processor
from training.preview import decode_prompt


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-chat") / "model"
    assert pipeline_main(["make-tiny-model", str(out)]) == 0
    return out, load_processor(str(out))


def shown(encoded, processor):
    """(prompt as the preview shows it, the supervised text)."""
    encoder = ChatEncoder(processor)
    labels = encoded["labels"][0].tolist()
    return (decode_prompt(encoded["input_ids"][0].tolist(), processor.tokenizer, encoder.image_token_id),
            processor.tokenizer.decode([t for t in labels if t != IGNORE], skip_special_tokens=False))


def test_official_layout_with_system_turn_and_labels_on_the_answer(tiny):
    _, processor = tiny
    page = PILImage.new("RGB", (300, 200), "white")
    conversation = Conversation([Turn("system", [Text("Be brief.")]),
                                 Turn("user", [Image(page), Text("What is it?")]),
                                 Turn("assistant", [Text("<think>look</think>A page.")], train=True)])
    encoded = ChatEncoder(processor).encode(conversation)
    prompt, target = shown(encoded, processor)
    tokens = ChatEncoder(processor).image_tokens(page)
    assert prompt == ("[gMASK]<sop><|system|>\nBe brief.<|user|>\n<|begin_of_image|>"
                      f"<|image|>x{tokens}<|end_of_image|>What is it?<|assistant|>\n<think>look</think>A page.<|user|>")
    assert target == "<think>look</think>A page.<|user|>", "the answer and GLM's end-of-turn token, nothing else"
    think = processor.tokenizer.convert_tokens_to_ids("<think>")
    assert think in encoded["labels"][0].tolist(), "a reply's <think> is the model's own token"
    grid = encoded["image_grid_thw"][0].tolist()
    assert grid[0] * grid[1] * grid[2] // 4 == tokens == int(encoded["mm_token_type_ids"].sum())
    # the generation prompt is exactly what apply_chat_template gives a server
    prompt_only = ChatEncoder(processor).encode(Conversation(conversation.turns[:-1]), add_generation_prompt=True,
                                                pixels=False)
    served = processor.apply_chat_template([{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": [{"type": "image"},
                                                                         {"type": "text", "text": "What is it?"}]}],
                                           tokenize=False, add_generation_prompt=True)
    assert shown(prompt_only, processor)[0] == served.replace("<|image|>", f"<|image|>x{tokens}")


def test_every_assistant_turn_is_trained_or_only_the_last(tiny):
    _, processor = tiny
    turns = [Turn("user", [Text("one?")]), Turn("assistant", [Text("first")], train=True),
             Turn("user", [Text("two?")]), Turn("assistant", [Text("second")], train=True)]
    _, target = shown(ChatEncoder(processor).encode(Conversation(turns)), processor)
    assert target == "first<|user|>second<|user|>"
    turns[1].train = False
    prompt, target = shown(ChatEncoder(processor).encode(Conversation(turns)), processor)
    assert target == "second<|user|>"
    assert prompt == "[gMASK]<sop><|user|>\none?<|assistant|>\nfirst<|user|>\ntwo?<|assistant|>\nsecond<|user|>"


def test_special_token_text_in_documents_stays_text(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    hostile = "a <|endoftext|> b <|image|> c <|user|> d <think>"
    conversation = Conversation([Turn("user", [Text("Read it.")]),
                                 Turn("assistant", [Text(hostile, literal=True)], train=True)])
    encoded = ChatEncoder(processor).encode(conversation)
    labels = [t for t in encoded["labels"][0].tolist() if t != IGNORE]
    control = {tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|image|>", "<think>")}
    assert not control & set(labels[:-1]), "no control token inside the document's text"
    assert labels[-1] == tokenizer.convert_tokens_to_ids("<|user|>")
    assert tokenizer.decode(labels[:-1]) == hostile
    assert int(encoded["mm_token_type_ids"].sum()) == 0 and "pixel_values" not in encoded


def test_target_truncated_prompt_too_long_rejected(tiny):
    _, processor = tiny
    page = PILImage.new("RGB", (300, 200), "white")
    conversation = Conversation([Turn("user", [Image(page), Text("Read it.")]),
                                 Turn("assistant", [Text("word " * 50, literal=True)], train=True)], key="k")
    encoder = ChatEncoder(processor)
    full = encoder.length(conversation)
    assert encoder.encode(conversation, max_length=full - 5)["input_ids"].shape[1] == full - 5
    with pytest.raises(PromptTooLong, match="does not fit"):
        encoder.encode(conversation, max_length=10)


def test_a_folder_without_a_chat_template_is_refused(tiny, tmp_path):
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny[0], folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(TemplateError, match="no chat template"):
        ChatEncoder(load_processor(str(folder)))


def test_a_released_glm41v_folder_loads_without_torchvision(tiny, tmp_path):
    """A GLM-4.1V repo names Glm4vProcessor, the torchvision image processor and a video processor."""
    import shutil

    folder = tmp_path / "released"
    shutil.copytree(tiny[0], folder)
    config = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").unlink()
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {**config["image_processor"], "image_processor_type": "Glm4vImageProcessor",
         "processor_class": "Glm4vProcessor"}))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Glm4vVideoProcessor", "processor_class": "Glm4vProcessor"}))
    model, processor = load_model_and_processor(str(folder))
    assert type(processor).__name__ == "Glm4vImageOnlyProcessor" and processor.chat_template
    assert type(model).__name__ == "Glm4vForConditionalGeneration"


def records_file(tmp_path, records, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def first_samples(processor, uri, count, **kwargs):
    stream = SftStream(str(uri), processor, load_style("best-en"), 4096, epochs=1, **kwargs)
    return list(stream)[:count], stream


@pytest.fixture
def pages(tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / f"page{index}.png"
        PILImage.new("RGB", (280 + 28 * index, 280), "white").save(path)
        paths.append(path)
    return paths


def test_ms_swift_records_multi_turn_system_and_image_forms(tiny, tmp_path, pages):
    _, processor = tiny
    record = {"messages": [{"role": "system", "content": "You read pages."},
                           {"role": "user", "content": "<image>What page?"},
                           {"role": "assistant", "content": "The first."},
                           {"role": "user", "content": "And <image>this?"},
                           {"role": "assistant", "content": "The second."}],
              "images": [pages[0].name, {"path": str(pages[1])}]}
    (sample,), _ = first_samples(processor, records_file(tmp_path, [record]), 1)
    prompt, target = shown(sample, processor)
    assert prompt.startswith("[gMASK]<sop><|system|>\nYou read pages.<|user|>\n<|begin_of_image|><|image|>x")
    assert "<|end_of_image|>What page?<|assistant|>\nThe first.<|user|>\nAnd <|begin_of_image|>" in prompt
    assert target == "The first.<|user|>The second.<|user|>"
    assert sample["image_grid_thw"].shape[0] == 2


def test_trl_conversational_and_prompt_completion_records_from_parquet(tiny, tmp_path, pages):
    _, processor = tiny
    typed = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "Blank."}]}],
             "images": [str(pages[0])]}
    split = {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}],
             "completion": [{"role": "assistant", "content": "That one."}], "images": [str(pages[1])]}
    (one, two), _ = first_samples(processor, records_file(tmp_path, [typed, split]), 2)
    assert shown(one, processor)[1] == "Blank.<|user|>" and shown(two, processor)[1] == "That one.<|user|>"
    table = pa.Table.from_pylist([{"prompt": "Say hi.", "completion": "hi"}])
    pq.write_table(table, tmp_path / "data.parquet")
    (three,), _ = first_samples(processor, tmp_path / "data.parquet", 1)
    assert shown(three, processor) == ("[gMASK]<sop><|user|>\nSay hi.<|assistant|>\nhi<|user|>", "hi<|user|>")


def test_context_records_render_pages_and_ocr_samples_vary_by_epoch(tiny, tmp_path, sample_docs):
    _, processor = tiny
    records = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                             {"role": "assistant", "content": f"answer {i}"}],
                "context": sample_docs["shakespeare-macbeth"][i * 5000:(i + 1) * 5000]} for i in range(4)]
    data = records_file(tmp_path, records)
    stream = SftStream(str(data), processor, load_style("best-en"), 4096, ocr_ratio=1.0, seed=1, epochs=3)
    samples = list(stream)
    ocr = [s for s in samples if s["task"] == "ocr"]
    assert len(ocr) == len(samples) // 2 == 12, "every context record also gives one OCR sample"
    texts = [shown(s, processor)[1] for s in ocr]
    for text in texts:
        assert text.endswith("<|user|>") and len(text) > 20 and text[:-8] in sample_docs["shakespeare-macbeth"]
    by_record = [texts[i::4] for i in range(4)]
    assert any(len(set(epochs)) > 1 for epochs in by_record), "the OCR page is drawn anew each epoch"


def test_bad_records_are_skipped_by_reason_and_the_rest_kept(tiny, tmp_path, pages, caplog):
    _, processor = tiny
    good = {"messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}],
            "images": [str(pages[0])]}
    records = [
        {"messages": [{"role": "user", "content": "<image><image>Q"}, {"role": "assistant", "content": "A"}],
         "images": [str(pages[0])]},  # more tags than images
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
         "images": [str(pages[0])]},  # fewer
        {"messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}],
         "images": ["missing.png"]},  # a path that does not exist
        {"question": "Q", "answer": "A"},  # unknown shape
        {"messages": [{"role": "user", "content": "Q " * 3000}, {"role": "assistant", "content": "A"}]},  # too long
        "not json",
        good,
    ]
    with caplog.at_level("WARNING"):
        samples, stream = first_samples(processor, records_file(tmp_path, records), 10)
    assert len(samples) == 1 and shown(samples[0], processor)[1] == "A<|user|>"
    text = caplog.text
    assert "0 image tags for 1 images" in text and "more image tags than images (1)" in text
    assert "missing.png does not exist" in text and "unknown record shape" in text
    assert "prompt too long" in text and "not JSON" in text
    assert f"{tmp_path / 'data.jsonl'}:3" in text, "the record is named by file and line"
    assert sum(stream.skipped.values()) == 6


def test_missing_data_and_all_bad_data_are_clear_errors(tiny, tmp_path):
    _, processor = tiny
    with pytest.raises(DataError, match="no such file"):
        SftStream(str(tmp_path / "nope.jsonl"), processor, load_style("best-en"), 4096)
    bad = records_file(tmp_path, [{"question": "Q"}])
    with pytest.raises(DataError, match="no trainable SFT records"):
        list(SftStream(str(bad), processor, load_style("best-en"), 4096, epochs=1))


def test_resume_position_skips_without_rendering(tiny, tmp_path, sample_docs, monkeypatch):
    """A resumed reader counts past what it gave without rendering a context."""
    _, processor = tiny
    records = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}],
                "context": sample_docs["shakespeare-sonnets"][i * 500:(i + 1) * 500]} for i in range(5)]
    data = records_file(tmp_path, records)
    whole = list(SftStream(str(data), processor, load_style("best-en"), 4096, ocr_ratio=0.5, epochs=1))
    stream = SftStream(str(data), processor, load_style("best-en"), 4096, ocr_ratio=0.5, epochs=1,
                       start={"positions": {"0": 4}, "batches": 4})
    rendered = []
    original = stream.parser.renderer.render
    monkeypatch.setattr(stream.parser.renderer, "render", lambda text: rendered.append(text) or original(text))
    rest = list(stream)
    assert [s["position"] for s in rest] == [s["position"] for s in whole[4:]]
    for a, b in zip(rest, whole[4:]):
        assert torch.equal(a["input_ids"], b["input_ids"])
    assert len(rendered) <= len(whole) - 4 + 1, "records before the position were not rendered"
