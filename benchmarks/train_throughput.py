"""Training throughput: the same raw text as plain tokens versus as rendered pages, one GPU.

    .venv/bin/python benchmarks/train_throughput.py                    # GLM-4.1V-shaped ~1.5 B, needs a GPU
    .venv/bin/python benchmarks/train_throughput.py --preset tiny --steps 2   # a smoke run on the CPU

Both paths train the same model (random initialisation is fine for speed) on the same
long context and the same short answer, loss on the answer only (`logits_to_keep`, so the
full-vocabulary logits are never materialised for the context):
- text: the context as text tokens;
- pages: the context rendered at the paper's best config (A4, 72 dpi), as images.
Reports time per step, samples/s, context characters/s (raw text throughput), tokens/s
and MFU counting attention FLOPs (6 N + 12 L d S per token, no recomputation) against
--peak-tflops (H100 SXM bf16 dense: 989). DeepSpeed ZeRO-2, bf16 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESETS = {
    # ~1.5 B text parameters, ~0.17 B vision, as in the baseline.
    "1.5b": dict(hidden=2048, layers=20, heads=16, kv_heads=2, intermediate=8192, vocab=151552,
                 vision_depth=12, vision_hidden=1024, vision_heads=16, vision_intermediate=4096),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024,
                 vision_depth=2, vision_hidden=32, vision_heads=2, vision_intermediate=64),
}


def build_model(shape: dict, tokenizer):
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration

    head_dim = shape["hidden"] // shape["heads"]
    frequencies = head_dim // 4  # partial rotary 0.5: head_dim / 2 rotary dims, half of them frequencies
    t = max(1, frequencies // 4)
    h = (frequencies - t) // 2
    ids = tokenizer.convert_tokens_to_ids
    config = Glm4vConfig(
        text_config=dict(vocab_size=max(shape["vocab"], len(tokenizer)), hidden_size=shape["hidden"],
                         intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=262144,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                          "mrope_section": [t, h, frequencies - t - h]}),
        vision_config=dict(depth=shape["vision_depth"], hidden_size=shape["vision_hidden"],
                           num_heads=shape["vision_heads"], intermediate_size=shape["vision_intermediate"],
                           out_hidden_size=shape["hidden"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image|>"), video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"), image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"), video_end_token_id=ids("<|end_of_video|>"))
    config._attn_implementation = "sdpa"
    return Glm4vForConditionalGeneration(config)


def inputs_for(path: str, context: str, processor, text_tokens: int, answer: str, device):
    """One sample: context (text tokens or page images), then the answer; labels on the answer only."""
    from PIL import Image

    from pipeline.render.document import Renderer
    from pipeline.render.styles import load_style

    tokenizer = processor.tokenizer
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if path == "text":
        # Random ids of the context's real length: the speed of T tokens does not depend on which.
        generator = torch.Generator().manual_seed(0)
        context_ids = torch.randint(100, len(tokenizer) - 100, (text_tokens,), generator=generator)
        prompt = {"input_ids": context_ids[None]}
    else:
        pages = Renderer(load_style("best-en")).render(context).pages
        images = [Image.fromarray(p.pixels).convert("RGB") for p in pages]
        text = "<|user|>" + "<|begin_of_image|><|image|><|end_of_image|>" * len(images) + "<|assistant|>"
        prompt = dict(processor(text=[text], images=images, return_tensors="pt"))
    ids = torch.cat([prompt["input_ids"][0], torch.tensor(answer_ids)])
    batch = {**prompt, "input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None]}
    if "mm_token_type_ids" in prompt:
        batch["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"][0],
                                                torch.zeros(len(answer_ids), dtype=torch.long)])[None]
    labels = torch.tensor(answer_ids)[None]
    return {k: v.to(device) for k, v in batch.items()}, labels.to(device)


def measure(engine, batch, labels, steps: int, warmup: int) -> float:
    keep = labels.shape[1] + 1
    for index in range(warmup + steps):
        if index == warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started = time.perf_counter()
        logits = engine(**batch, logits_to_keep=keep).logits[0, :-1].float()  # positions that predict the answer
        loss = torch.nn.functional.cross_entropy(logits, labels[0])
        engine.backward(loss)
        engine.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="1.5b", choices=sorted(PRESETS))
    parser.add_argument("--context-chars", type=int, default=40_000, help="raw text per sample")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    from render_speed import essays

    from training.config import TrainConfig
    from training.engine import build_engine, init_distributed
    from training.models.tiny import make_tiny_model
    from training.models import load_model_and_processor
    from pipeline.render.tokens import TextTokenizer

    init_distributed()
    import tempfile

    with tempfile.TemporaryDirectory() as temp:  # the tiny model's tokenizer and processor, reused for shape
        _, processor = load_model_and_processor(str(make_tiny_model(Path(temp) / "tiny")))
    context = "\n\n".join(text for _, text in essays())[: args.context_chars]
    text_tokens = TextTokenizer().count(context)  # cl100k: about what GLM's tokenizer gives on English
    model = build_model(PRESETS[args.preset], processor.tokenizer)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    params = sum(p.numel() for p in model.parameters())
    engine = build_engine(model, TrainConfig(learning_rate=1e-5))
    shape = PRESETS[args.preset]
    report = {"preset": args.preset, "parameters": params, "device": str(engine.device),
              "context_chars": len(context), "context_text_tokens": text_tokens, "paths": {}}
    for path in ("text", "pages"):
        batch, labels = inputs_for(path, context, processor, text_tokens, "The answer is forty-two.", engine.device)
        seconds = measure(engine, batch, labels, args.steps, args.warmup)
        tokens = int(batch["input_ids"].shape[1])
        flops_per_token = 6 * params + 12 * shape["layers"] * shape["hidden"] * tokens
        report["paths"][path] = {
            "sequence_tokens": tokens, "seconds_per_step": round(seconds, 4),
            "samples_per_s": round(1 / seconds, 3), "context_chars_per_s": round(len(context) / seconds),
            "tokens_per_s": round(tokens / seconds, 1),
            "mfu": round(flops_per_token * tokens / seconds / (args.peak_tflops * 1e12), 4),
        }
    text, pages = report["paths"]["text"], report["paths"]["pages"]
    report["raw_text_throughput_pages_over_text"] = round(pages["context_chars_per_s"] / text["context_chars_per_s"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
