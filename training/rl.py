"""GRPO on TRL's GRPOTrainer: DAPO's token-level loss with clip-higher, on rendered long contexts.

    python -m training.rl --config configs/train/rl.yaml [--model PATH --data FILE --output-dir DIR
        --max-steps N --group-size G --deepspeed JSON]
    deepspeed --num_gpus 8 --module training.rl --config ...      (or torchrun -m)

Prompts are the SFT conventions (the last assistant message is the reference answer), contexts
rendered on the fly, OCR prompts mixed in at `ocr_ratio`; they go through the model's own chat
template. TRL's trainer generates a group of completions per prompt (transformers `generate`, or
vLLM when `use_vllm`), stopping on the model's own stop tokens, scores them with our reward
registry, and optimises `loss_type="dapo"` (token-level normalisation, epsilon 0.2 / 0.28)
with `num_iterations` passes and `steps_per_generation` micro-batches per generation batch, so
later updates are off-policy and the clip bites. Its ZeRO-3 generation gathers the parameters
first. A KL coefficient of 0 (the default, as in DAPO) loads no reference model.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from training.config import TrainConfig, parse_config
from training.errors import UsageError
from training.trainer import run_stage

log = logging.getLogger(__name__)


def grpo_arguments(cfg: TrainConfig, local: str):
    from trl import GRPOConfig

    from training.trainer import bf16_available, deepspeed_config

    import torch

    extra = {}
    if cfg.steps_per_generation:
        extra["steps_per_generation"] = cfg.steps_per_generation
    if cfg.use_vllm:
        extra.update(use_vllm=True, vllm_mode=cfg.vllm_mode,
                     vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    return GRPOConfig(
        output_dir=str(Path(local) / "checkpoints"), max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_generations=cfg.group_size,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, loss_type="dapo",
        epsilon=cfg.epsilon_low, epsilon_high=cfg.epsilon_high, beta=cfg.beta, num_iterations=cfg.num_iterations,
        scale_rewards="group", bf16=bf16_available(), activation_checkpointing=cfg.gradient_checkpointing,
        deepspeed=deepspeed_config(cfg), save_strategy="steps", save_steps=cfg.save_every,
        save_total_limit=None, logging_steps=cfg.log_every, report_to=[], seed=cfg.seed,  # CheckpointSync rotates
        disable_tqdm=not sys.stderr.isatty(), use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
        ddp_timeout=cfg.ddp_timeout,
        # TRL gathers the logged images only on ranks whose batch has some: a rank with text prompts alone
        # skips that collective and the next one pairs with it wrongly (a hang). We log no images anyway.
        log_multimodal=False,
        **extra)


class PromptSet:
    """RL prompts from SFT-style records: checked, length-measured and counted up front, rendered on access.

    Each record gives its prompt (the turns before the last assistant answer, which is the reference)
    and, with probability `ocr_ratio` when its context was rendered here, an OCR prompt of one page.
    """

    def __init__(self, cfg: TrainConfig, processor, encoder):
        import random

        from pipeline.render.styles import resolve_config
        from training.data.sft import RecordError, SftStream

        self.stream = SftStream(cfg.data, processor, resolve_config(cfg.render_style, cfg.render_config),
                                cfg.max_length, cfg.ocr_ratio, cfg.seed, epochs=1)
        self.encoder, self.limit = encoder, cfg.max_prompt_length or cfg.max_length
        self.rows: list[tuple[str, object, int | None]] = []  # (where, record, OCR page or None)
        for where, record in self.stream.records():
            try:
                conversation, pages = self._parse(where, record)
            except RecordError as err:
                self.stream.skip(err.reason, f"RL prompt {where}", err)
                continue
            self._add(where, record, None, conversation)
            draw = random.Random(f"{cfg.seed}:{where}")
            if pages and draw.random() < cfg.ocr_ratio:
                page = draw.randrange(len(pages))
                self._add(where, record, page, self._ocr(where, pages, page))
        if not self.rows:
            raise UsageError(f"no usable RL prompts in {cfg.data} (skipped: {dict(self.stream.skipped)})")

    def _parse(self, where: str, record):
        from training.data.sft import folder_of

        conversation, pages = self.stream.parser.parse(record, folder_of(where))
        conversation.key = where
        return conversation, pages

    @staticmethod
    def _ocr(where: str, pages: list, page: int):
        from training.data.chat import Image
        from training.data.tasks import OCR_PROMPT, conversation

        image, text = pages[page]
        return conversation("ocr", [Image(image)], text, f"{where}#ocr", OCR_PROMPT)

    def _add(self, where: str, record, page: int | None, conversation) -> None:
        from training.data.chat import Conversation

        if not conversation.reference.strip():
            self.stream.skip("no reference answer", f"RL prompt {where}")
            return
        length = self.encoder.length(Conversation(conversation.turns[:-1]), add_generation_prompt=True)
        if length > self.limit:
            self.stream.skip("prompt too long", f"RL prompt {where}", f"{length} tokens > {self.limit}")
            return
        self.rows.append((where, record, page))

    def row(self, position: int) -> dict:
        where, record, page = self.rows[position]
        conversation, pages = self._parse(where, record)
        return as_trl_row(conversation if page is None else self._ocr(where, pages, page))

    def dataset(self):
        """A Hugging Face dataset of row numbers whose rows are built (and contexts rendered) on access."""
        import datasets

        def build(batch):
            rows = [self.row(position) for position in batch["row"]]
            return {key: [r[key] for r in rows] for key in rows[0]}

        return datasets.Dataset.from_dict({"row": list(range(len(self.rows)))}).with_transform(build)


def as_trl_row(conversation) -> dict:
    """A Conversation -> TRL's conversational prompt with image placeholders, its images, and reward columns."""
    from training.data.chat import Image, Text

    messages, images = [], []
    for turn in conversation.turns[:-1]:
        if turn.role == "user":
            content = []
            for part in turn.parts:
                if isinstance(part, Image):
                    content.append({"type": "image"})
                    images.append(part.image.convert("RGB"))
                else:
                    content.append({"type": "text", "text": part.text})
        else:
            content = "".join(p.text for p in turn.parts if isinstance(p, Text))
        messages.append({"role": turn.role, "content": content})
    question = next(("".join(p.text for p in t.parts if isinstance(p, Text)).strip()
                     for t in reversed(conversation.turns[:-1]) if t.role == "user"), "")
    return {"prompt": messages, "images": images, "answer": conversation.reference, "task": conversation.task,
            "question": question}


def stop_ids(model, tokenizer) -> list[int]:
    """The model's own stop tokens (GLM-4.1V: <|endoftext|>, <|user|>, <|observation|>, </answer>)."""
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return eos or [tokenizer.eos_token_id]


def judge_client(cfg: TrainConfig):
    from pipeline.evaluate.client import ChatClient

    if "llm_judge" not in cfg.rewards:
        return None
    if not cfg.judge_endpoint:
        raise UsageError("rewards: llm_judge needs judge_endpoint and judge_model")
    return ChatClient(cfg.judge_endpoint, cfg.judge_model or "judge", timeout=60, retries=1)


def main(argv=None) -> int:
    cfg = parse_config(argv, description=__doc__)
    from trl import GRPOTrainer

    from training.data.chat import ChatEncoder
    from training.data.sft import data_files
    from training.rewards import get_reward, trl_rewards
    from training.trainer import Progress, finish_run, run_callbacks, stage_output, start_run

    for name in cfg.rewards:
        get_reward(name)  # an unknown name fails before anything loads
    data_files(cfg.data)
    local = stage_output(cfg)
    args = grpo_arguments(cfg, local)
    checkpoint, _, model, processor = start_run(cfg, args, local, workers=0)
    prompts = PromptSet(cfg, processor, ChatEncoder(processor))
    if args.process_index == 0:
        print(f"{len(prompts.rows)} RL prompts; skipped: {dict(prompts.stream.skipped) or 'none'}", flush=True)
    stops = stop_ids(model, processor.tokenizer)
    model.generation_config.eos_token_id = stops
    functions, weights = trl_rewards(cfg.rewards, processor.tokenizer,
                                     set(stops) | {processor.tokenizer.pad_token_id}, judge_client(cfg))
    args.reward_weights = weights
    trainer = GRPOTrainer(model=model, processing_class=processor, reward_funcs=functions, args=args,
                          train_dataset=prompts.dataset(),
                          callbacks=run_callbacks(cfg, local, model, Progress(), workers=0))
    finish_run(trainer, processor, cfg, local, checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
