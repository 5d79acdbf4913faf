"""GRPO through real DeepSpeed on the CPU, and the reward registry (the judge against a scripted server)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main as pipeline_main
from pipeline.evaluate.client import ChatClient
from tests.support.openai_server import ScriptedChatServer
from training.rewards import REWARDS, get_reward, llm_judge_reward

REPO = Path(__file__).resolve().parents[2]


def test_rl_stage_runs_drops_flat_groups_and_updates(tmp_path):
    model = tmp_path / "model"
    assert pipeline_main(["make-tiny-model", str(model)]) == 0
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "rl"
    result = subprocess.run([sys.executable, "-m", "training.rl", "--config", "configs/train/rl.yaml",
                             "--model", str(model), "--output-dir", str(out), "--max-steps", "3",
                             "--group-size", "4", "--max-new-tokens", "12", "--learning-rate", "0.001",
                             "--ocr-ratio", "0.5"], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all("reward_mean" in m and "dropped_groups" in m for m in metrics)
    before = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    after = hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert before != after, "the policy moved"


def test_registry_and_judge():
    assert set(REWARDS) == {"exact_match", "f1", "format", "ocr", "llm_judge"}
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward("bleu")
    server = ScriptedChatServer([("text", "9"), ("text", "I think 3/10"), ("text", "no number"), ("status", 500)])
    try:
        judge = ChatClient(server.url, "judge", retries=0)
        scores = llm_judge_reward(["a", "b", "c", "d"], ["a"] * 4, questions=["q"] * 4, judge=judge)
    finally:
        server.close()
    assert scores == [0.9, 0.3, 0.0, 0.0]
    assert "Reference answer: a" in server.requests[0]["body"]["messages"][0]["content"]
    with pytest.raises(ValueError, match="no judge endpoint"):
        llm_judge_reward(["a"], ["a"])
