"""`pipeline make-tiny-model OUT`: a randomly initialised GLM-4.1V-architecture model, offline.

Deterministic: a byte-level BPE tokenizer trained on the bundled sample
corpus with GLM-4.1V's special tokens, a model of a few hundred thousand
parameters from a fixed seed, the PIL image processor (no torchvision), the
image-only processor with the official GLM-4.1V chat template, and GLM-4.1V's
stop tokens in the generation config, all saved so the folder loads through the
same code path as a real checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import REPO_ROOT

SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>", "<|assistant|>",
    "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>", "<think>", "</think>", "<answer>", "</answer>", "<|begin_of_box|>", "<|end_of_box|>",
]
# GLM-4.1V's generation_config stops on these: a reply ends at the next <|user|> turn.
STOP_TOKENS = ["<|endoftext|>", "<|user|>", "<|observation|>", "</answer>"]
CHAT_TEMPLATE = Path(__file__).with_name("glm41v_chat_template.jinja")
CORPUS = REPO_ROOT / "data" / "sample" / "sample.jsonl"
# One token per 28x28 pixels; tiny bounds keep CPU tests fast (an A4 page at 72 dpi: 630 tokens).
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 1024


def train_tokenizer(vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for line in CORPUS.open(encoding="utf-8")]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_config(tokenizer, hidden: int = 64, layers: int = 2):
    from transformers import Glm4vConfig

    ids = tokenizer.convert_tokens_to_ids
    rotary_factor = 0.5
    # mrope_section splits the rotary frequencies (head_dim * factor / 2 of them) into t, h, w.
    frequencies = int(hidden // 4 * rotary_factor) // 2
    t = max(1, frequencies // 4)
    h = (frequencies - t) // 2
    sections = [t, h, frequencies - t - h]
    return Glm4vConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=65536, eos_token_id=ids("<|endoftext|>"),
                         pad_token_id=ids("<|endoftext|>"),
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "partial_rotary_factor": rotary_factor, "mrope_section": sections}),
        vision_config=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image|>"), video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"), image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"), video_end_token_id=ids("<|end_of_video|>"),
    )


def make_tiny_model(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import Glm4vForConditionalGeneration
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    from training.models.processor import Glm4vImageOnlyProcessor

    out = Path(out)
    tokenizer = train_tokenizer()
    image_processor = Glm4vImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    processor = Glm4vImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                        chat_template=CHAT_TEMPLATE.read_text())
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(tiny_config(tokenizer))
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config.eos_token_id = [ids(t) for t in STOP_TOKENS]
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    from training.models.processor import write_serving_layout

    write_serving_layout(out)  # laid out as a released GLM-4.1V folder
    return out
