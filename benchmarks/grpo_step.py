"""Two GRPO steps of the GLM-4.1V-shaped ~1.5 B model on one GPU, through `python -m training.rl` itself.

    .venv/bin/python benchmarks/grpo_step.py                      # one GPU; vLLM colocated when installed
    .venv/bin/python benchmarks/grpo_step.py --preset tiny --completion 16   # CPU smoke run

Builds the randomly initialised model (with the tiny model's GLM-4.1V tokenizer, processor and chat
template) into a temporary folder, writes prompts over a rendered context from the bundled sample
corpus (each also giving an OCR prompt), and runs the RL stage for 2 steps with group 16, the DAPO
loss, ZeRO-2 and bf16. Reports each step's time, the peak GPU memory and the completion lengths from
the stage's own metrics.jsonl.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1.5b", choices=["1.5b", "tiny"], help="model shape (default 1.5b)")
    parser.add_argument("--group", type=int, default=16, help="completions per prompt (default 16)")
    parser.add_argument("--completion", type=int, default=1024, help="max completion tokens (default 1024)")
    args = parser.parse_args()
    import torch

    from train_throughput import PRESETS, build_model
    from training.models.processor import load_processor
    from training.models.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "model"
        processor = load_processor(str(make_tiny_model(Path(temp) / "tiny")))
        model = build_model(PRESETS[args.preset], processor.tokenizer)
        model.generation_config.eos_token_id = [processor.tokenizer.convert_tokens_to_ids(t)
                                                for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]
        model.to(torch.bfloat16 if torch.cuda.is_available() else torch.float32).save_pretrained(folder)
        processor.save_pretrained(folder)
        del model
        corpus = [json.loads(line) for line in (REPO / "data" / "sample" / "sample.jsonl").open()]
        records = [{"messages": [{"role": "user", "content": "Who wrote this, and what is it?"},
                                 {"role": "assistant", "content": "<think>the title page</think>" + doc["id"]}],
                    "context": doc["text"][:6000]} for doc in corpus[:2]]
        data = Path(temp) / "prompts.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        vllm = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
        command = [sys.executable, "-m", "training.rl", "--config", "configs/train/rl.yaml", "--model", str(folder),
                   "--data", str(data), "--output-dir", str(Path(temp) / "out"), "--max-steps", "2",
                   "--group-size", str(args.group), "--per-device-batch-size", str(args.group),
                   "--max-completion-length", str(args.completion), "--ocr-ratio", "1", "--num-iterations", "1",
                   "--save-every", "1000", "--use-vllm", str(vllm).lower(), "--max-length", "16384"]
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions")}
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if result.returncode:
            sys.exit(result.stdout[-2000:] + result.stderr[-4000:])
        metrics = [json.loads(line) for line in (Path(temp) / "out" / "metrics.jsonl").open()]
    steps = [{key: m.get(key) for key in ("step", "elapsed_s", "peak_memory_gib", "completions/mean_length",
                                          "reward", "clip_ratio/high_mean", "frac_reward_zero_std")}
             for m in metrics]
    print(json.dumps({"preset": args.preset, "group": args.group, "vllm": vllm, "wall_s": round(
        time.perf_counter() - started, 1), "steps": steps}, indent=2))


if __name__ == "__main__":
    main()
