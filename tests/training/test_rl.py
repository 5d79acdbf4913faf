"""GRPO on TRL's GRPOTrainer through real DeepSpeed on the CPU, and the reward registry (judge: a scripted server)."""

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
from training.rewards import REWARDS, get_reward, llm_judge_reward, trl_rewards
from tests.support.train_env import env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("rl")
    assert pipeline_main(["make-tiny-model", str(root / "model")]) == 0
    # one record: its own prompt (exact match: every completion scores 0, a degenerate group) and an OCR prompt
    # of its rendered page (a graded reward)
    record = {"messages": [{"role": "user", "content": "Who wrote this?"},
                           {"role": "assistant", "content": "<think>the header</think>William Shakespeare"}],
              "context": sample_docs["shakespeare-macbeth"][:600]}
    (root / "prompts.jsonl").write_text(json.dumps(record) + "\n")
    return root


def rl(tiny, out, *extra, launcher=None, timeout=600, module_flag=True):
    args = ["training.rl", "--config", "configs/train/rl.yaml", "--model", str(tiny / "model"), "--data",
            str(tiny / "prompts.jsonl"), "--output-dir", str(out), "--ocr-ratio", "1", "--rewards", "exact_match",
            "--learning-rate", "0.01", *extra]
    command = (launcher or [sys.executable]) + (["-m"] if module_flag else []) + args
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)


def failure(result) -> str:
    """The exit code and the lines that say what went wrong, not the warnings around them."""
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if ("rror" in line or "Traceback" in line or "exit" in line) and "Warning" not in line]
    return f"exit {result.returncode}: " + "\n".join(lines[-15:])


def metrics_of(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_one_rank_dapo_objective_in_force(tiny, tmp_path):
    out = tmp_path / "rl"
    result = rl(tiny, out, "--max-steps", "4", "--save-every", "4")
    assert result.returncode == 0, failure(result)
    assert "2 RL prompts" in result.stdout and "step 4/4 loss" in result.stdout
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean"):
        assert all(key in m for m in metrics)
    generated = [m for m in metrics if "frac_reward_zero_std" in m]  # steps 1 and 3 sample, 2 and 4 reuse
    assert len(generated) == 2 and sorted(m["frac_reward_zero_std"] for m in generated) == [0.0, 1.0], \
        "the exact-match group is degenerate and counted; the OCR group is not"
    assert all("rewards/exact_match/mean" in m and "completions/mean_length" in m for m in generated)
    reused = [m for m in metrics if "frac_reward_zero_std" not in m]
    assert any(m["clip_ratio/low_mean"] + m["clip_ratio/high_mean"] > 0 for m in reused), \
        "the second pass over a generation batch is off-policy, and the clip acts"
    before = hashlib.sha256((tiny / "model" / "model.safetensors").read_bytes()).hexdigest()
    after = hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert before != after, "the policy moved"
    assert not (out / "model" / "ref").exists()


@pytest.mark.parametrize("name,zero", [("torchrun", 3), ("deepspeed", 2)])
def test_two_ranks_with_a_degenerate_group_on_one_rank(tiny, tmp_path, name, zero):
    from tests.support.s3 import free_port

    port = str(free_port())
    launcher = {"torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                             port],
                "deepspeed": [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", port,
                              "--module"]}[name]
    out = tmp_path / "rl2"
    # a deadlock (ranks generating different lengths, one rank's group degenerate) would hit the timeout
    result = rl(tiny, out, "--max-steps", "2", "--save-every", "2", "--deepspeed", f"configs/deepspeed/zero{zero}.json",
                launcher=launcher, timeout=300, module_flag=name == "torchrun")
    assert result.returncode == 0, failure(result)
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[0]["frac_reward_zero_std"] == 0.5, "two groups, one per rank, one of them degenerate"
    assert metrics[1]["clip_ratio/low_mean"] + metrics[1]["clip_ratio/high_mean"] > 0
    from training.models import load_model_and_processor

    model, _ = load_model_and_processor(str(out / "model"))  # under ZeRO-3, parameters gathered on export
    assert type(model).__name__ == "Glm4vForConditionalGeneration"


def test_kill_minus_nine_then_resume(tiny, tmp_path):
    import signal
    import time

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "training.rl", "--config", "configs/train/rl.yaml", "--model",
               str(tiny / "model"), "--data", str(tiny / "prompts.jsonl"), "--output-dir", str(out), "--ocr-ratio",
               "1", "--save-every", "2", "--max-steps", "200"]
    run = subprocess.Popen(command, start_new_session=True, env=env(), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not latest.exists():
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    saved = int(latest.read_text().strip().rsplit("-", 1)[1])
    result = subprocess.run(command[:-1] + [str(saved + 2)], capture_output=True, text=True, timeout=600, env=env(),
                            cwd=REPO)
    assert result.returncode == 0, failure(result)
    assert f"resumed from step {saved}" in result.stdout
    assert [m["step"] for m in metrics_of(out)][-2:] == [saved + 1, saved + 2]


def test_bad_input_is_a_clear_error_or_a_counted_skip(tiny, tmp_path):
    result = rl(tiny, tmp_path / "x", "--rewards", "bleu")
    assert result.returncode == 2 and "unknown reward 'bleu'" in result.stderr and "Traceback" not in result.stderr
    from pipeline.render.styles import load_style  # noqa: F401  (the renderer's config)
    from training.config import TrainConfig
    from training.data.chat import ChatEncoder
    from training.models.processor import load_processor
    from training.rl import PromptSet

    records = [{"messages": [{"role": "user", "content": "Q"}]},  # no answer
               {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " "}]},  # empty
               {"messages": [{"role": "user", "content": "Q " * 400}, {"role": "assistant", "content": "A"}]},
               {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    processor = load_processor(str(tiny / "model"))
    prompts = PromptSet(TrainConfig(data=str(data), max_prompt_length=300, ocr_ratio=0.0), processor,
                        ChatEncoder(processor))
    assert len(prompts.rows) == 1
    assert dict(prompts.stream.skipped) == {"the last message must be the assistant's answer": 1,
                                            "no reference answer": 1, "prompt too long": 1}


def test_trl_prompt_is_the_chat_template_layout(tiny):
    """TRL tokenises the prompt with processor.apply_chat_template: the same ids as our encoder's generation prompt."""
    from trl.data_utils import prepare_multimodal_messages

    from training.config import TrainConfig
    from training.data.chat import ChatEncoder, Conversation
    from training.models.processor import load_processor
    from training.rl import PromptSet

    processor = load_processor(str(tiny / "model"))
    encoder = ChatEncoder(processor)
    prompts = PromptSet(TrainConfig(data=str(tiny / "prompts.jsonl"), ocr_ratio=1.0), processor, encoder)
    row = prompts.row(0)
    messages = [{"role": "system", "content": "Answer briefly."}] + row["prompt"]
    prepared = prepare_multimodal_messages(messages, images=row["images"])  # TRL's own preparation
    ids = processor.apply_chat_template([prepared], add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"][0]
    text = processor.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("[gMASK]<sop><|system|>\nAnswer briefly.<|user|>\n<|begin_of_image|><|image|>")
    assert text.endswith("<|end_of_image|>Who wrote this?<|assistant|>\n")
    where, record, _ = prompts.rows[0]
    conversation, _ = prompts._parse(where, record)
    from training.data.chat import Text, Turn

    ours = encoder.encode(Conversation([Turn("system", [Text("Answer briefly.")]), *conversation.turns[:-1]]),
                          add_generation_prompt=True, pixels=False)["input_ids"][0].tolist()
    assert list(ids) == ours


def test_rewards_see_reasoning_tags_and_the_judge_is_asked_the_question(tiny):
    from training.models.processor import load_processor

    tokenizer = load_processor(str(tiny / "model")).tokenizer
    user, pad = tokenizer.convert_tokens_to_ids("<|user|>"), tokenizer.pad_token_id
    replies = ["<think>look</think>Paris", "Paris", "<think>unclosed Paris"]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [user, pad] for r in replies]
    assert "<think>" not in tokenizer.decode(ids[0], skip_special_tokens=True), "why TRL's own text is not used"
    functions, weights = trl_rewards({"format": 0.1, "exact_match": 1.0}, tokenizer, {user, pad})
    assert [f.__name__ for f in functions] == ["format", "exact_match", "ocr_aux"] and weights == [0.1, 1.0, 1.0]
    columns = dict(answer=["paris"] * 3, task=["sft"] * 3, question=["Capital?"] * 3)
    assert functions[0](completion_ids=ids, **columns) == [1.0, 1.0, 0.0]
    assert functions[1](completion_ids=ids, **columns) == [1.0, 1.0, 0.0]
    assert functions[2](completion_ids=ids, **columns) == [None, None, None], "OCR reward only on OCR prompts"
    server = ScriptedChatServer([("text", "9"), ("text", "no number"), ("status", 500)])
    logged = []
    try:
        judge = ChatClient(server.url, "judge", retries=0)
        functions, _ = trl_rewards({"llm_judge": 1.0}, tokenizer, {user, pad}, judge=judge)
        scores = functions[0](completion_ids=ids, log_metric=lambda name, value: logged.append((name, value)),
                              **columns)
    finally:
        server.close()
    assert scores == [0.9, 0.0, 0.0], "a malformed or failing judge scores 0, never crashes"
    assert logged == [("rewards/llm_judge/failures", 2.0)]
    assert "Question: Capital?" in server.requests[0]["body"]["messages"][0]["content"]
    assert "<think>" not in server.requests[0]["body"]["messages"][0]["content"], "the judge sees the answer only"


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


def test_dapo_normalises_per_token_on_a_hand_worked_example(tiny, tmp_path):
    """Two completions of 3 and 1 tokens, ratios set by hand: the loss is the clipped per-token loss summed over
    all 4 tokens and divided by 4 (DAPO), not the mean of per-sequence means (GRPO's -0.0633)."""
    import math

    import datasets
    import torch
    from trl import GRPOTrainer

    from training.config import TrainConfig
    from training.models import load_model_and_processor
    from training.rl import grpo_arguments

    model, processor = load_model_and_processor(str(tiny / "model"))
    cfg = TrainConfig(deepspeed="none", group_size=2, per_device_batch_size=2, gradient_checkpointing=False)
    args = grpo_arguments(cfg, str(tmp_path))
    trainer = GRPOTrainer(model=model, processing_class=processor, reward_funcs=[lambda completions, **_: [0.0]],
                          args=args, train_dataset=datasets.Dataset.from_dict({"prompt": ["x", "y"]}))
    assert (trainer.loss_type, trainer.epsilon_low, trainer.epsilon_high) == ("dapo", 0.2, 0.28)
    ids = processor.tokenizer("Some words to read here", add_special_tokens=False)["input_ids"]
    prompt = torch.tensor([ids[:2]] * 2)
    completion = torch.tensor([ids[2:5], ids[2:5]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    model.train()
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(model, torch.cat([prompt, completion], 1),
                                                           torch.cat([torch.ones_like(prompt), mask], 1), 3)[0]
    ratios = torch.tensor([[1.5, 1.0, 0.5], [0.5, 1.0, 1.0]])
    inputs = {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
              "completion_mask": mask, "advantages": torch.tensor([1.0, -1.0]),
              "old_per_token_logps": logps - torch.log(ratios), "num_items_in_batch": torch.tensor(4.0)}
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer._compute_loss(model, inputs)
    # A = +1: -min(r, clip(r, 0.8, 1.28)) = -1.28, -1.0, -0.5;  A = -1: max(r, clip(r)) = 0.8 for r = 0.5
    expected = (-1.28 - 1.0 - 0.5 + 0.8) / 4
    assert math.isclose(float(loss), expected, abs_tol=1e-4), float(loss)
