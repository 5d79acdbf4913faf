"""Show exactly what a stage trains on: one JSON line per sample, decoded from the encoded tokens.

    python -m training.preview --stage pretrain|sft|rl --config CFG [--model M] [--data D] [--num N]

Each line has `prompt` (the whole input as the model sees it, special tokens visible, each
image's run of tokens shown as one marker such as `<|image|>x420`), `target` (the decoded
supervised tokens: what the loss is on; for rl, the reference answer the rewards compare
with), `task` and `images` (each image's size in pixels and tokens).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

from training.config import parse_config
from training.trainer import run_stage


def decode_prompt(ids: list[int], tokenizer, image_token_id: int) -> str:
    """Decoded ids with special tokens visible; each run of image tokens collapsed to `<|image|>xN`."""
    out = []
    for is_image, run in itertools.groupby(ids, key=lambda t: t == image_token_id):
        run = list(run)
        out.append(f"{tokenizer.convert_ids_to_tokens(image_token_id)}x{len(run)}" if is_image
                   else tokenizer.decode(run, skip_special_tokens=False))
    return "".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["pretrain", "sft", "rl"], required=True, help="which stage's samples")
    parser.add_argument("--num", type=int, default=3, help="samples to show (default 3)")
    known, rest = parser.parse_known_args(argv)
    cfg = parse_config(rest, description=__doc__)
    from training.data.chat import IGNORE, ChatEncoder, Conversation
    from training.models.processor import load_processor, local_model_path

    processor = load_processor(local_model_path(cfg.model))
    tokenizer, encoder = processor.tokenizer, ChatEncoder(processor)
    for sample in itertools.islice(samples(known.stage, cfg, processor), known.num):
        if known.stage == "rl":
            conversation = sample
            encoded = encoder.encode(Conversation(conversation.turns[:-1]), cfg.max_length,
                                     add_generation_prompt=True, pixels=False)
            target, task = conversation.reference, conversation.task
        else:
            encoded, task = sample, sample["task"]
            labels = encoded["labels"][0].tolist()
            target = tokenizer.decode([t for t in labels if t != IGNORE], skip_special_tokens=False)
        ids = encoded["input_ids"][0].tolist()
        grids = encoded.get("image_grid_thw")
        print(json.dumps({"task": task, "prompt": decode_prompt(ids, tokenizer, encoder.image_token_id),
                          "target": target, "tokens": len(ids),
                          "images": [] if grids is None else [{"grid_thw": g} for g in grids.tolist()]},
                         ensure_ascii=False), flush=True)
    return 0


def samples(stage: str, cfg, processor):
    from pipeline.render.styles import resolve_config
    from training.data.sft import SftStream

    if stage == "pretrain":
        from training.data.stream import PageTaskStream
        from training.data.tasks import TaskBuilder

        return iter(PageTaskStream(cfg.data, processor, TaskBuilder(cfg.tasks, cfg.max_pages, cfg.seed),
                                   cfg.max_length, epochs=1, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed))
    stream = SftStream(cfg.data, processor, resolve_config(cfg.render_style, cfg.render_config), cfg.max_length,
                       cfg.ocr_ratio, cfg.seed, epochs=1, last_turn_only=cfg.last_turn_only)
    if stage == "rl":
        return (conversation for _, conversation in stream.conversations())
    return iter(stream)


if __name__ == "__main__":
    sys.exit(run_stage(main))
