"""Module calls that are the same on every rank, whatever that rank's data.

Under ZeRO-3 each call of a module all-gathers its parameters, and each backward reduce-scatters
their gradients: these are collectives, matched across ranks by their order alone. A rank whose
data makes it call a module more or fewer times than the others puts every later collective out
of step: gloo aborts ("Received data size doesn't match expected size"), NCCL hangs until the
process-group timeout. Two calls depend on the data in our stages:

- the loss projects supervised positions onto the vocabulary `chunk` at a time, so the number of
  head calls follows each rank's supervised count: the ranks agree on the largest count first and
  a rank with fewer runs zero-weight chunks of one position;
- the vision tower runs only for a batch with images: on a rank whose batch has none, it runs on one
  blank merge block, right where it would have run (after the token embedding), and adds nothing.

DeepSpeed's `TiledFusedLogitsLoss` (its ALST long-sequence loss) meets the same problem by asking
the caller for a shard count that every rank must already share, and it computes the head's weight
gradient inside the forward with an incoming gradient of 1, which drops any scaling applied after it
(ours normalises by the accumulated batch's token count); so the count is agreed here and the
chunks stay under `torch.utils.checkpoint`, whose gradients are exact.
"""

from __future__ import annotations

import torch

from training.data.chat import IGNORE



def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def partitioned(param: torch.Tensor) -> bool:
    """Whether calling the module that holds `param` gathers it from the other ranks (ZeRO-3, FSDP)."""
    return hasattr(param, "ds_id") or type(param).__name__ == "DTensor" or type(param.data).__name__ == "DTensor"


def every_rank(value: int, device: torch.device) -> list[int]:
    """`value` as each rank has it (one all-gather of one number per rank)."""
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.long, device=device)
    gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return [int(t.item()) for t in gathered]


def chunked_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, head, chunk: int,
                          agree: bool | None = None, stats: dict | None = None) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over supervised positions, `chunk` positions projected at a time.

    Each chunk's logits are freed after its loss and recomputed in the backward pass, so at most one
    chunk of full-vocabulary logits (in fp32) is alive at once. `agree` (default: when the head's
    weight is partitioned over several ranks) makes every rank call the head as often as the rank
    with the most chunks; the extra chunks weigh nothing, and `stats["loss_chunks_padded"]` counts them
    over all ranks.

    >>> head = torch.nn.Linear(4, 7, bias=False)
    >>> hidden, labels = torch.randn(1, 6, 4), torch.tensor([[-100, 3, 1, -100, 6, 2]])
    >>> total, count = chunked_cross_entropy(hidden, labels, head, chunk=2)
    >>> whole = torch.nn.functional.cross_entropy(head(hidden[0, :-1]), labels[0, 1:], reduction="sum")
    >>> count, bool(torch.allclose(total, whole))
    (4, True)
    """
    from torch.utils.checkpoint import checkpoint

    targets = labels[:, 1:]
    keep = targets != IGNORE
    states, targets = hidden[:, :-1][keep], targets[keep]
    chunks = -(-len(targets) // chunk)
    if agree is None:
        agree = world_size() > 1 and partitioned(head.weight)
    if agree:
        counts = every_rank(chunks, hidden.device)
        chunks = max(counts)
        if stats is not None:
            stats["loss_chunks_padded"] = stats.get("loss_chunks_padded", 0) + sum(chunks - c for c in counts)
    total = hidden[:, :1].sum().float() * 0.0  # keeps the graph whole when nothing is supervised
    for start in range(0, chunks * chunk, chunk):
        part, wanted, weight = states[start:start + chunk], targets[start:start + chunk], 1.0
        if not len(part):  # another rank has more chunks: the same head call, weighing nothing
            part, wanted, weight = hidden.reshape(-1, hidden.shape[-1])[:1], targets.new_zeros(1), 0.0
        total = total + weight * checkpoint(_chunk_loss, part, wanted, head, use_reentrant=False)
    return total, len(targets)


def _chunk_loss(states: torch.Tensor, targets: torch.Tensor, head) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(head(states).float(), targets, reduction="sum")


class VisionOnEveryRank:
    """Runs a multimodal model's vision tower in every forward, so that a rank whose batch has no image
    gathers the tower's parameters, enters DeepSpeed's module trace and reduces the tower's (zero)
    gradients in step with the ranks whose batches have images.

    For models laid out as GLM-4.1V and Qwen2-VL are (`model.model.visual`, images passed to
    `model.model` as `pixel_values`). A batch without images goes through the model's own forward
    with its token embeddings computed first and a blank merge block run through the tower and added
    times zero: the same modules in the same order as a batch with images, forward and backward, and
    the same positions (text positions, as the model gives a batch without images). It is skipped
    where it is not needed: one rank, and a forward without gradients whose tower ZeRO-3 does not
    hook (TRL's ZeRO-3 generation gathers the parameters once and unhooks them; ZeRO-2).
    """

    def __init__(self, model):
        self.inner = getattr(model, "model", None)
        self.visual = getattr(self.inner, "visual", None)
        self.original = None
        if self.visual is None or world_size() == 1:
            return
        vision = model.config.vision_config
        merge, patch = vision.spatial_merge_size, vision.patch_size
        width = getattr(vision, "in_channels", 3) * vision.temporal_patch_size * patch * patch
        self.blank = (torch.zeros(merge * merge, width), torch.tensor([[1, merge, merge]]))
        self.original = self.inner.forward
        self.inner.forward = self.forward

    def needed(self, args: tuple, kwargs: dict) -> bool:
        """A batch of token ids, no images, no cache, and a forward that gathers or reduces the tower.

        With gradients, the backward reduces the tower's gradients on every rank. Without them, a tower
        that ZeRO-3 has hooked gathers its parameters and enters the module trace, which DeepSpeed
        requires to be the same on every rank. (Whether a parameter is gathered at this moment is no
        guide: DeepSpeed's prefetch may have fetched it.)"""
        if args or kwargs.get("input_ids") is None or kwargs.get("inputs_embeds") is not None:
            return False
        if any(kwargs.get(k) is not None for k in ("pixel_values", "pixel_values_videos", "mm_encoder_outputs",
                                                   "cache", "past_key_values")):
            return False
        return torch.is_grad_enabled() or bool(self.visual._forward_pre_hooks)

    def forward(self, *args, **kwargs):
        if not self.needed(args, kwargs):
            return self.original(*args, **kwargs)
        input_ids = kwargs.pop("input_ids")
        embeds = self.inner.get_input_embeddings()(input_ids)
        pixels, grid = self.blank
        device = embeds.device
        features = self.visual(pixels.to(device, self.visual.dtype), grid_thw=grid.to(device))
        features = getattr(features, "pooler_output", features)
        kwargs["inputs_embeds"] = embeds + (features.sum() * 0.0).to(embeds.dtype)
        if kwargs.get("position_ids") is None:  # what the model gives token ids without images
            batch, length = input_ids.shape
            kwargs["position_ids"] = torch.arange(length, device=device).view(1, 1, -1).expand(3, batch, -1)
        return self.original(*args, **kwargs)
