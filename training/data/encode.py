"""TaskSample -> model inputs: the processor's own image resize rule; loss on the target only.

The prompt (images, interleaved text, instruction) ends with `<|assistant|>`, a
special token, so the target tokenizes the same alone as after it; labels are
-100 over the prompt and every image token. Too long: the target is truncated;
a prompt that alone exceeds max_length cannot be trained on and is rejected.
"""

from __future__ import annotations

from training.data.tasks import TaskSample

IGNORE = -100
IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"


class PromptTooLong(ValueError):
    pass


def encode_prompt(sample: TaskSample, processor) -> dict:
    """The processor's inputs for the prompt alone (what generation starts from)."""
    prompt, images = "<|user|>", []
    for part in sample.parts:
        if isinstance(part, str):
            prompt += part
        else:
            prompt += IMAGE
            images.append(part.convert("RGB"))
    prompt += sample.instruction + "<|assistant|>"
    return dict(processor(text=[prompt], images=images or None, return_tensors="pt"))


def encode(sample: TaskSample, processor, max_length: int) -> dict:
    import torch

    inputs = encode_prompt(sample, processor)
    prompt_ids = inputs["input_ids"][0]
    if len(prompt_ids) >= max_length:
        raise PromptTooLong(f"{sample.key}: prompt of {len(prompt_ids)} tokens >= max_length {max_length}")
    tokenizer = processor.tokenizer
    target_ids = tokenizer(sample.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    target_ids = torch.tensor(target_ids[: max_length - len(prompt_ids)], dtype=prompt_ids.dtype)
    input_ids = torch.cat([prompt_ids, target_ids])
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE), target_ids])
    encoded = {"input_ids": input_ids[None], "attention_mask": torch.ones_like(input_ids)[None],
               "labels": labels[None]}
    for key in ("pixel_values", "image_grid_thw"):
        if key in inputs:
            encoded[key] = inputs[key]
    if "mm_token_type_ids" in inputs:
        encoded["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"][0],
                                                  torch.zeros_like(target_ids)])[None]
    return encoded
