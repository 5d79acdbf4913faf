"""GRPO on rendered long contexts (and the auxiliary OCR task), as a DeepSpeed job.

    python -m training.rl --config configs/train/rl.yaml [--model PATH --data FILE.jsonl
        --output-dir DIR --max-steps N]
    deepspeed --num_gpus 8 -m training.rl --config ...      (or torchrun)

Each step takes one prompt (the SFT record format: the last assistant message
is the reference answer), samples a group of completions, scores them with the
configured rewards, drops the group if all rewards are equal, and takes one
clip-higher policy-gradient step with a KL penalty to the frozen starting model.
"""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from training.config import parse_config
from training.data.chat import ChatEncoder, Conversation, Text
from training.data.sft import SftStream
from training.engine import MetricsLog, build_engine, finish, finite, init_distributed, resume, to_device
from training.grpo import clipped_token_loss, completion_logprobs, group_advantages, kl_to_reference
from training.models import load_model_and_processor
from training.rewards import get_reward


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    rank, world = init_distributed()
    torch.manual_seed(cfg.seed + rank)
    from pipeline.render.styles import resolve_config

    model, processor = load_model_and_processor(cfg.model)
    reference, _ = load_model_and_processor(cfg.model)
    reference.eval().requires_grad_(False)
    engine = build_engine(model, cfg)
    reference.to(engine.device)
    local, checkpoints, position = resume(engine, cfg, rank)
    rewards = {name: (get_reward(name), weight) for name, weight in cfg.rewards.items()}
    judge = _judge(cfg) if "llm_judge" in rewards else None

    encoder = ChatEncoder(processor)
    prompts = _prompts(SftStream(cfg.data, processor, resolve_config(cfg.render_style, cfg.render_config),
                                 cfg.max_length, cfg.ocr_ratio, cfg.seed, rank=rank, world_size=world),
                       rank, world, skip=position["samples"])
    metrics = MetricsLog(local, rank, sum(p.numel() for p in model.parameters()))
    step, seen, dropped = position["step"], position["samples"], 0
    bar = tqdm(total=cfg.max_steps, initial=step, disable=rank != 0 or None, file=sys.stderr, unit="step")
    while step < cfg.max_steps:
        sample, reference_answer = next(prompts)
        seen += 1
        prompt = encoder.encode(Conversation(sample.turns[:-1], key=sample.key), cfg.max_length,
                                add_generation_prompt=True)
        prompt.pop("labels")
        prompt = to_device(prompt, engine.device)
        completions = _generate(engine.module, prompt, processor, cfg)
        texts = _completion_texts(completions, engine.module, processor)
        names = {"ocr": "ocr"} if sample.task == "ocr" else {}
        scores = _score(rewards, names, texts, reference_answer, _question(sample), judge)
        advantages = group_advantages(torch.tensor(scores))
        if advantages is None:  # every completion scored the same: nothing to learn from this group
            dropped += 1
            continue
        loss = _group_loss(engine, reference, prompt, completions, advantages, cfg)
        engine.backward(loss)
        engine.step()
        step += 1
        if step % cfg.log_every == 0:
            tokens = sum(len(c) for c in completions) + prompt["input_ids"].shape[1] * len(completions)
            record = metrics.log(step, finite(loss), engine.get_lr()[0], len(completions), tokens, task=sample.task,
                                 reward_mean=round(sum(scores) / len(scores), 4), dropped_groups=dropped)
            bar.set_postfix(reward=record["reward_mean"], refresh=False)
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            checkpoints.save(step, seen)
    bar.close()
    finish(engine, processor, cfg, local, rank)
    return 0


def _prompts(stream: SftStream, rank: int, world: int, skip: int):
    """(conversation, reference answer) forever (epoch after epoch), skipping those a resumed run used."""
    given, epoch = 0, 0
    while True:
        produced = False
        for _, conversation in stream.conversations(rank, world, epoch):
            produced = True
            given += 1
            if given > skip:
                yield conversation, conversation.reference
        if not produced:
            raise RuntimeError(f"no usable prompts in {stream.uri}")
        epoch += 1


def _stop_ids(model, processor) -> list[int]:
    """The model's own stop tokens (GLM-4.1V: <|endoftext|>, <|user|>, <|observation|>, </answer>)."""
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return eos or [processor.tokenizer.eos_token_id]


@torch.no_grad()
def _generate(model, prompt: dict, processor, cfg) -> list[torch.Tensor]:
    """cfg.group_size sampled completions, each cut just after its first stop token."""
    stops = _stop_ids(model, processor)
    pad = processor.tokenizer.pad_token_id
    out = model.generate(**prompt, do_sample=True, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                         num_return_sequences=cfg.group_size, pad_token_id=pad, eos_token_id=stops)
    completions = []
    for row in out[:, prompt["input_ids"].shape[1]:]:
        ends = torch.isin(row, torch.tensor(stops, device=row.device)).nonzero()
        completions.append(row[: int(ends[0]) + 1] if len(ends) else row)
    return [c if len(c) else torch.tensor([stops[0]], device=out.device) for c in completions]


def _completion_texts(completions: list, model, processor) -> list[str]:
    """What the rewards read: the completion with its tags (<think>) intact, stop and padding tokens removed."""
    drop = set(_stop_ids(model, processor)) | {processor.tokenizer.pad_token_id}
    return [processor.tokenizer.decode([t for t in c.tolist() if t not in drop], skip_special_tokens=False)
            for c in completions]


def _question(conversation) -> str:
    """The last user turn's text: what the judge is asked about."""
    for turn in reversed(conversation.turns[:-1]):
        if turn.role == "user":
            return "".join(p.text for p in turn.parts if isinstance(p, Text)).strip()
    return ""


def _score(rewards: dict, override: dict, texts: list[str], reference: str, question: str, judge) -> list[float]:
    """Weighted sum of the configured rewards; an OCR prompt is scored by the OCR reward alone."""
    chosen = {"ocr": (get_reward("ocr"), 1.0)} if override else rewards
    total = [0.0] * len(texts)
    for function, weight in chosen.values():
        values = function(texts, references=[reference] * len(texts), questions=[question] * len(texts),
                          judge=judge)
        total = [t + weight * v for t, v in zip(total, values)]
    return total


def _group_loss(engine, reference, prompt: dict, completions: list, advantages, cfg) -> torch.Tensor:
    losses = []
    for completion, advantage in zip(completions, advantages.tolist()):
        logp = completion_logprobs(engine, prompt, completion)
        with torch.no_grad():
            ref_logp = completion_logprobs(reference, prompt, completion)
        old_logp = logp.detach()  # one update per group: the sampling policy is the current one
        token_loss = clipped_token_loss(logp, old_logp, advantage, cfg.epsilon_low, cfg.epsilon_high) \
            + cfg.beta * kl_to_reference(logp, ref_logp)
        losses.append(token_loss.mean())
    return torch.stack(losses).mean()


def _judge(cfg):
    from pipeline.evaluate.client import ChatClient

    if not cfg.judge_endpoint:
        raise ValueError("rewards: llm_judge needs judge_endpoint and judge_model")
    return ChatClient(cfg.judge_endpoint, cfg.judge_model or "judge", timeout=60)


if __name__ == "__main__":
    sys.exit(main())
