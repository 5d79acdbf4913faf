"""Pre-training and SFT on transformers' Trainer, with DeepSpeed through its `deepspeed` argument.

Ours is the data (page tasks, SFT records, on-the-fly rendering, chat-template encoding),
the loss and the bookkeeping that makes a run resumable from local disk or S3; the loop,
DeepSpeed (ZeRO-2 or ZeRO-3), optimizer, schedule, gradient accumulation, checkpoints
and RNG state are the Trainer's.

- The loss never holds full-vocabulary logits for the whole sequence: the model runs with
  no logits kept, and the final hidden states of supervised positions are projected onto
  the vocabulary `loss_chunk_tokens` at a time, each chunk recomputed in the backward pass
  (liger-kernel's fused kernel needs the whole unsharded head weight, which ZeRO-3 never has).
- Every rank calls every module as often as the others, whatever its data (training/collectives.py):
  under ZeRO-3 each call is a collective, and a rank out of step aborts or hangs the job. A hang
  becomes an error after `ddp_timeout` seconds.
- The DataLoader's own worker processes read, render and encode ahead of the GPU; each
  rank reads its own shards, so nothing is dispatched between ranks.
- Each checkpoint also holds every reader's data position; a resumed run continues there
  without decoding what it skips. `OUTPUT/checkpoints/latest` names the newest complete
  checkpoint and is written (and, for s3://, uploaded) last.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from training.checkpoints import CheckpointSync, agreed_checkpoint, read_json
from training.collectives import VisionOnEveryRank, chunked_cross_entropy
from training.config import TrainConfig
from training.data.chat import IGNORE
from training.outputs import local_output, sync_down, sync_up
from training.errors import UsageError

# GRPO's own metrics kept in metrics.jsonl: rewards per function, clip ratios, degenerate groups, lengths, KL.
RL_METRICS = ("reward", "rewards/", "clip_ratio/", "frac_reward_zero_std", "completions/", "kl", "entropy")


def ensure_distributed_env() -> None:
    """A plain `python -m training.X` run is a world of one (DeepSpeed wants the launcher's variables)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def deepspeed_config(cfg: TrainConfig) -> dict | None:
    """The DeepSpeed JSON named by the config; `deepspeed: none` trains without DeepSpeed (plain DDP)."""
    if cfg.deepspeed.lower() in ("", "none"):
        return None
    path = cfg.deepspeed_path
    if not path.is_file():
        raise UsageError(f"deepspeed: no such file {cfg.deepspeed}")
    return json.loads(path.read_text())


def bf16_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def attention_implementation(cfg: TrainConfig) -> str:
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def training_arguments(cfg: TrainConfig, local: str) -> TrainingArguments:
    scheduler, scheduler_kwargs = cfg.lr_scheduler, {}
    if scheduler == "cosine" and cfg.min_learning_rate > 0:
        scheduler, scheduler_kwargs = "cosine_with_min_lr", {"min_lr": cfg.min_learning_rate}
    return TrainingArguments(
        output_dir=str(Path(local) / "checkpoints"), max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=scheduler, lr_scheduler_kwargs=scheduler_kwargs, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, bf16=bf16_available(),
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        deepspeed=deepspeed_config(cfg), save_strategy="steps", save_steps=cfg.save_every,
        save_total_limit=None,  # CheckpointSync rotates, after the pointer moves
        logging_steps=cfg.log_every, report_to=[], seed=cfg.seed,
        ignore_data_skip=True,  # our readers resume at their saved positions instead
        disable_tqdm=not sys.stderr.isatty(), use_cpu=not torch.cuda.is_available(), ddp_timeout=cfg.ddp_timeout,
        average_tokens_across_devices=True, remove_unused_columns=False)


class Collator:
    """Samples -> one padded micro-batch; the reader positions and tasks ride along as `meta`."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, samples: list[dict]) -> dict:
        longest = max(s["input_ids"].shape[1] for s in samples)

        def pad(key: str, value: int) -> torch.Tensor:
            rows = [torch.nn.functional.pad(s[key][0], (0, longest - s[key].shape[1]), value=value) for s in samples]
            return torch.stack(rows)

        batch = {"input_ids": pad("input_ids", self.pad_id), "attention_mask": pad("attention_mask", 0),
                 "labels": pad("labels", IGNORE), "mm_token_type_ids": pad("mm_token_type_ids", 0)}
        with_images = [s for s in samples if "pixel_values" in s]
        if with_images:
            batch["pixel_values"] = torch.cat([s["pixel_values"] for s in with_images])
            batch["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in with_images])
        batch["meta"] = {"tasks": [s["task"] for s in samples], "reader": samples[0]["reader"],
                         "position": max(s["position"] for s in samples),
                         "lengths": [s["input_ids"].shape[1] for s in samples]}
        return batch


class Progress:
    """What the trainer consumed: each reader's position, tokens and tasks since the last log line."""

    def __init__(self):
        self.positions: dict[int, int] = {}
        self.batches = 0
        self.tokens, self.attention_flops_units, self.tasks = 0, 0, Counter()
        self.collectives: dict = {}  # loss chunks run only to keep the ranks in step, over all ranks

    def consume(self, meta: dict) -> None:
        self.positions[meta["reader"]] = max(self.positions.get(meta["reader"], 0), meta["position"])
        self.batches += 1
        self.tokens += sum(meta["lengths"])
        self.attention_flops_units += sum(n * n for n in meta["lengths"])
        self.tasks.update(meta["tasks"])

    def take(self) -> tuple[int, int, dict, dict]:
        out = (self.tokens, self.attention_flops_units, dict(self.tasks), self.collectives)
        self.tokens, self.attention_flops_units, self.tasks, self.collectives = 0, 0, Counter(), {}
        return out


class GlyphTrainer(Trainer):
    loss_is_scaled_for_ga = True  # compute_loss divides by the tokens of the whole accumulated batch

    def __init__(self, *args, cfg: TrainConfig, progress: Progress, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg, self.progress = cfg, progress
        self.model_accepts_loss_kwargs = True  # so the Trainer counts the accumulated batch's target tokens

    def get_train_dataloader(self):
        workers = self.cfg.dataloader_workers
        return torch.utils.data.DataLoader(
            self.train_dataset, batch_size=self.cfg.per_device_batch_size, collate_fn=self.data_collator,
            num_workers=workers, prefetch_factor=self.cfg.prefetch_factor if workers else None,
            persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.progress.consume(inputs.pop("meta"))
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        unwrapped = self.accelerator.unwrap_model(model)
        captured = {}
        norm = unwrapped.get_decoder().norm
        hook = norm.register_forward_hook(lambda module, args, output: captured.__setitem__("hidden", output))
        try:  # no logits kept: the hidden states come from the final norm
            model(**inputs, logits_to_keep=torch.zeros_like(inputs["attention_mask"], dtype=torch.bool))
        finally:
            hook.remove()
        total, count = chunked_cross_entropy(captured["hidden"], labels, unwrapped.get_output_embeddings(),
                                             self.cfg.loss_chunk_tokens, stats=self.progress.collectives)
        loss = total / (num_items_in_batch if num_items_in_batch is not None else max(count, 1))
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # ranks' gradients are averaged, tokens were summed
        return (loss, None) if return_outputs else loss


class RunLog(TrainerCallback):
    """Plain progress lines (when not on a terminal) and metrics.jsonl on rank 0."""

    def __init__(self, cfg: TrainConfig, local: str, progress: Progress, params: int, layers: int, hidden: int):
        self.cfg, self.progress, self.params, self.layers, self.hidden = cfg, progress, params, layers, hidden
        self.path = Path(local) / "metrics.jsonl"
        self.peak = float(os.environ.get("GLYPH_PEAK_FLOPS", "0")) or None
        self.plain = not sys.stderr.isatty()
        self.started = self.last = time.perf_counter()
        self.first_step, self.seen_tokens = 0, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step
        self.started = self.last = time.perf_counter()
        if state.is_world_process_zero and state.global_step:
            samples = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps \
                * args.world_size
            print(f"resumed from step {state.global_step} ({samples} samples)", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" not in (logs or {}):
            return
        now = time.perf_counter()
        seconds, self.last = max(now - self.last, 1e-9), now
        tokens, attention_units, tasks, collectives = self.progress.take()
        if not tokens and "num_tokens" in logs:  # GRPO counts its own (prompt and completion) tokens
            tokens, self.seen_tokens = int(logs["num_tokens"]) - self.seen_tokens, int(logs["num_tokens"])
        flops = 6 * self.params * tokens + 12 * self.layers * self.hidden * attention_units
        done = state.global_step - self.first_step
        eta = (now - self.started) / max(done, 1) * (state.max_steps - state.global_step)
        record = {"step": state.global_step, "loss": round(float(logs["loss"]), 5), "lr": logs.get("learning_rate"),
                  "grad_norm": logs.get("grad_norm"),
                  "tokens_per_s": round(tokens / seconds, 1) if tokens else None,  # GRPO: only generating steps
                  "mfu": round(flops / seconds / self.peak, 5) if self.peak else None,
                  "elapsed_s": round(now - self.started, 2), "eta_s": round(eta, 1), "tasks": tasks,
                  "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                  if torch.cuda.is_available() else None,
                  **collectives, **{k: v for k, v in logs.items() if k.startswith(RL_METRICS)}}
        if not state.is_world_process_zero:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.plain:
            lr = f"{record['lr']:.3g}" if isinstance(record["lr"], float) else record["lr"]
            rl = "".join(f" {k} {logs[k]:.4g}" for k in ("reward", "clip_ratio/low_mean", "clip_ratio/high_mean",
                                                          "frac_reward_zero_std") if k in logs)
            speed = f" tokens/s {record['tokens_per_s']:.0f}" if record["tokens_per_s"] else ""
            print(f"step {state.global_step}/{state.max_steps} loss {record['loss']:.4f} lr {lr}{rl}{speed} "
                  f"eta {_clock(eta)}", flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def resume_point(args: TrainingArguments, cfg: TrainConfig, workers: int) -> tuple[str | None, dict]:
    """(checkpoint folder, this rank's data position) of the checkpoint to resume from, or (None, {})."""
    folder = agreed_checkpoint(Path(args.output_dir), args.process_index, args.world_size)
    if folder is None:
        return None, {}
    try:
        saved = read_json(folder / f"data-position-rank{args.process_index}.json")
    except ValueError as err:
        raise UsageError(f"resume: {folder} has no data position for rank {args.process_index} ({err}): "
                         "it was written by fewer ranks, or on another node's disk") from None
    if (saved["world_size"], saved["workers"]) != (args.world_size, workers):
        raise UsageError(f"resume: {folder} was written by {saved['world_size']} ranks with "
                         f"{saved['workers']} DataLoader workers each; this run has {args.world_size} and {workers}. "
                         "Resume with the same, or start a new output_dir")
    for key in ("model", "data"):
        if key in saved and not _same_source(saved[key], getattr(cfg, key)):
            raise UsageError(f"resume: {cfg.output_dir} holds a run of --{key} {saved[key]} (at {folder.name}); "
                             f"this run asks for --{key} {getattr(cfg, key)}. Resuming would train one model on "
                             "two runs' settings: use another --output-dir, or the same --" + key)
    return str(folder), saved


def _same_source(saved: str, given: str) -> bool:
    """The same model or data: equal as written, or the same local path written differently."""
    if saved == given:
        return True
    try:
        return Path(saved).exists() and Path(given).exists() and Path(saved).samefile(given)
    except OSError:
        return False


def cpu_process_group(timeout_s: int) -> None:
    """On the CPU, start the gloo process group with `timeout_s` ourselves: transformers' TrainingArguments
    passes `ddp_timeout` on for GPUs but drops it with `use_cpu`, which would leave torch's 30 minutes."""
    import datetime

    import torch.distributed as dist

    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        return
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))


def stage_output(cfg: TrainConfig) -> str:
    """Set up the process for a stage and return where it writes (an s3:// output is staged locally)."""
    ensure_distributed_env()
    cpu_process_group(cfg.ddp_timeout)
    if not sys.stderr.isatty():  # task logs: no progress bars from loading and saving
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return local_output(cfg.output_dir)


def start_run(cfg: TrainConfig, args: TrainingArguments, local: str, workers: int):
    """(checkpoint, data position, model, processor): an s3:// output mirrored down, the newest complete
    checkpoint found, the model loaded (after the arguments, so ZeRO-3 loads it already partitioned)."""
    from training.models import load_model_and_processor

    with args.main_process_first(local=True):
        if args.local_process_index == 0:
            sync_down(cfg.output_dir, local)
    checkpoint, position = resume_point(args, cfg, workers)
    if cfg.model.startswith(("/", "./", "../", "~")) and not Path(cfg.model).expanduser().is_dir():
        raise UsageError(f"--model {cfg.model}: no such folder")
    try:
        model, processor = load_model_and_processor(cfg.model, dtype=torch.bfloat16 if args.bf16 else None,
                                                    attn_implementation=attention_implementation(cfg))
    except OSError as err:
        raise UsageError(f"--model {cfg.model}: cannot load a model there ({str(err).splitlines()[0]})") from None
    return checkpoint, position, model, processor


class SameCallsOnEveryRank(TrainerCallback):
    """The vision tower runs on every rank in every forward (installed once the model is wrapped)."""

    def __init__(self):
        self.guard = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.guard is None and model is not None:
            self.guard = VisionOnEveryRank(getattr(model, "module", model))


def run_callbacks(cfg: TrainConfig, local: str, model, progress: Progress, workers: int) -> list:
    """Plain progress lines and metrics.jsonl; data positions and the s3:// upload with every checkpoint;
    the same module calls on every rank."""
    text = model.config.get_text_config()
    params = sum(p.numel() for p in model.parameters())
    return [RunLog(cfg, local, progress, params, text.num_hidden_layers, text.hidden_size),
            CheckpointSync(cfg, local, progress, workers), SameCallsOnEveryRank()]


def finish_run(trainer: Trainer, processor, cfg: TrainConfig, local: str, checkpoint: str | None) -> None:
    """Train from the checkpoint (or the start), then export the model; a run already trained to max_steps
    and exported is left as it is (a second run of a finished stage changes nothing)."""
    if checkpoint is not None and trainer.args.max_steps > 0:
        from pipeline import storage

        step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
        exported = storage.join(cfg.output_dir, "model", "config.json")
        if step >= trainer.args.max_steps and storage.get_storage(exported).exists(exported):
            print(f"already trained to step {step} of {trainer.args.max_steps} and exported: "
                  f"{storage.join(cfg.output_dir, 'model')}", flush=True)
            return
    if not sys.stderr.isatty():
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # RunLog prints plain lines instead of dicts
    trainer.train(resume_from_checkpoint=checkpoint)
    export(trainer, processor, cfg, local, trainer.args)


def train(cfg: TrainConfig, make_dataset) -> int:
    """Build arguments, model and data; train (resuming where a checkpoint says); export the model."""
    local = stage_output(cfg)
    args = training_arguments(cfg, local)
    workers = cfg.dataloader_workers
    checkpoint, position, model, processor = start_run(cfg, args, local, workers)
    model.config.use_cache = False
    dataset = make_dataset(processor, args.process_index, args.world_size, position)
    progress = Progress()
    progress.positions = {int(k): v for k, v in position.get("positions", {}).items()}
    progress.batches = position.get("batches", 0)
    trainer = GlyphTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                           data_collator=Collator(processor.tokenizer.pad_token_id),
                           callbacks=run_callbacks(cfg, local, model, progress, workers), cfg=cfg, progress=progress)
    finish_run(trainer, processor, cfg, local, checkpoint)
    return 0


def export(trainer: Trainer, processor, cfg: TrainConfig, local: str, args: TrainingArguments) -> None:
    """The model in Hugging Face format with its processor (chat template included), local or s3://."""
    target = Path(local) / "model"
    trainer.save_model(str(target))  # ZeRO-3: gathered into one 16-bit state dict
    if args.process_index == 0:
        from training.models.processor import write_serving_layout

        processor.save_pretrained(target)
        write_serving_layout(target)  # names the stock Glm4vProcessor, as a released GLM-4.1V folder does
    write_parameter_digest(trainer, local, args.process_index)
    if args.process_index == 0:
        sync_up(local, cfg.output_dir, 0, only="model")
        sync_up(local, cfg.output_dir, 0, only="metrics.jsonl")
        from pipeline import storage

        print(f"exported the model to {storage.join(cfg.output_dir, 'model')}", flush=True)


def write_parameter_digest(trainer: Trainer, local: str, rank: int) -> None:
    """Each rank's hash of its full parameters (ZeRO-2: data-parallel ranks must agree); not under ZeRO-3."""
    import hashlib

    engine = trainer.model_wrapped
    if getattr(engine, "zero_optimization_stage", lambda: 0)() >= 3:
        return
    digest = hashlib.sha256()
    for name, param in sorted(trainer.accelerator.unwrap_model(trainer.model).named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    (Path(local) / f"params-rank{rank}.sha256").write_text(digest.hexdigest() + "\n")


def run_stage(main, argv=None) -> int:
    """An entry point's errors a user can fix, as one line and exit code 2; not a traceback."""
    try:
        code = main(argv)
        close_process_group(wait_for_others=True)
        return code
    except UsageError as err:
        message = str(err).strip()
        if "Original Traceback" in message:  # raised in a DataLoader worker: its last line says why
            message = message.splitlines()[-1].split(": ", 1)[-1]
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    finally:
        close_process_group(wait_for_others=False)


def close_process_group(wait_for_others: bool) -> None:
    """Shut the process group down before the interpreter does: left to interpreter exit, a gloo rank's
    communication threads can be destroyed while running ("terminate called without an active exception",
    SIGABRT, after a finished run)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_others:
        dist.barrier()
    dist.destroy_process_group()
