"""GRPO, the pieces: group advantages, the clip-higher objective, KL to the reference model.

Written here rather than taken from TRL's GRPOTrainer: TRL is not a dependency of
this project, and its trainer runs its own accelerate/DeepSpeed loop and input
building, which would sit beside the shared loop and the image-only GLM-4.1V
processor every other stage uses. The objective is small enough to own:
DAPO-style clip-higher (eps_low 0.2, eps_high 0.28), a k3 KL estimate to a frozen
reference, token-mean per sequence, groups whose rewards are all equal dropped.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor | None:
    """(r - mean) / std within a group; None when all rewards are equal (no signal: drop the group).

    >>> [round(a, 3) for a in group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0])).tolist()]  # std 0.5
    [1.0, -1.0, 1.0, -1.0]
    >>> group_advantages(torch.tensor([0.5, 0.5])) is None
    True
    """
    std = rewards.std(unbiased=False)
    if float(std) < 1e-8:
        return None
    return (rewards - rewards.mean()) / (std + eps)


def clipped_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantage: float, eps_low: float = 0.2,
                       eps_high: float = 0.28) -> torch.Tensor:
    """-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) per token.

    >>> ratio = torch.log(torch.tensor([1.5, 0.5]))
    >>> clipped_token_loss(ratio, torch.zeros(2), 1.0).tolist()   # A > 0: gains capped at 1.28, 0.5 kept
    [-1.2799999713897705, -0.5]
    >>> clipped_token_loss(ratio, torch.zeros(2), -1.0).tolist()  # A < 0: 1.5 kept, 0.5 floored at 0.8
    [1.5, 0.800000011920929]
    """
    ratio = torch.exp(logp - old_logp)
    return -torch.min(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)


def kl_to_reference(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(policy || reference) per token: exp(d) - d - 1 with d = ref - policy.

    >>> kl_to_reference(torch.zeros(2), torch.zeros(2)).tolist()
    [0.0, 0.0]
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def completion_logprobs(model, prompt: dict, completion_ids: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the completion's tokens given the prompt (with its images)."""
    prompt_ids = prompt["input_ids"]
    input_ids = torch.cat([prompt_ids, completion_ids[None]], dim=1)
    inputs = {**prompt, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if "mm_token_type_ids" in prompt:
        inputs["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(completion_ids)[None]],
                                                dim=1)
    logits = model(**inputs).logits[0, prompt_ids.shape[1] - 1:-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids[:, None])[:, 0]
