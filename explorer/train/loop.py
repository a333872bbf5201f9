"""The training loop: real short fine-tunes of every method, reporting through callbacks.

The loop knows nothing of its UI (minGPT's trainer): it calls ``on_event(dict)`` for every step and
evaluation, and the caller writes them to the run's log.jsonl, prints them, or streams them. It
runs in the CLI's process or in a worker process started by explorer.jobs, never in the web server.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import calculator
from ..data import uploads as data
from ..costs import memory, specs
from . import runs
from ..errors import ExplorerError
from ..methods import METHODS
from ..methods.base import coerce, option


@dataclass
class TrainConfig:
    model: str = option("smollm2-135m-instruct", "Runnable model to fine-tune.")
    method: str = option("lora", "Method from the registry.", choices=tuple(METHODS))
    dataset: str = option("pirate", "A bundled task (pirate, french, json_extract, sentiment) or an uploaded file.")
    steps: int = option(20, "Optimizer steps.", min=1, max=100_000)
    learning_rate: float = option(0.0, "Learning rate; 0 = the method's default (prompt, prefix and IA³ need far "
                                  "higher rates than LoRA).", min=0.0, max=10.0)
    batch_size: int = option(4, "Examples per micro-batch.", min=1, max=1024)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", min=1, max=1024)
    seq_len: int = option(96, "Tokens per example; longer ones are truncated (and counted).", min=8, max=32_768)
    seed: int = option(0, "Random seed: data order, initialisation, dropout.", min=0, max=2**31 - 1)
    precision: str = option("fp32", "fp32, or bf16 where the hardware supports it.", choices=("fp32", "bf16"))
    gradient_checkpointing: bool = option(False, "Recompute activations in backward: less memory, slower steps.")
    optimizer: str = option("adamw", "AdamW, 8-bit AdamW (bitsandbytes) or SGD.", choices=("adamw", "adamw8bit", "sgd"))
    eval_every: int = option(5, "Held-out loss every this many steps.", min=1, max=100_000)
    eval_examples: int = option(16, "Held-out examples for the task score (generated before and after).", min=0, max=1000)
    max_new_tokens: int = option(32, "Tokens generated per held-out example for the task score.", min=1, max=512)

    @classmethod
    def parse(cls, values: dict, caps: bool = True) -> "TrainConfig":
        """A config from loose values (UI widgets, CLI strings, saved settings.json), checked.

        ``caps``: also enforce this server's hosting caps (EXPLORER_MAX_STEPS, EXPLORER_MAX_SEQ_LEN,
        EXPLORER_MAX_BATCH). Everything a user submits goes through them; a run saved earlier (reopened
        for Compare, or started by a worker after being queued) may pass ``caps=False``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ExplorerError(f"Unknown training setting {', '.join(unknown)}.")
        config = cls(**{k: coerce(fields[k], v) for k, v in values.items()})
        if caps:
            config.check_caps()
        return config

    def check_caps(self) -> None:
        """Refuse settings above this server's hosting caps, naming the setting that sets each cap."""
        from .. import settings

        for name, cap, variable in (("steps", settings.max_steps(), "EXPLORER_MAX_STEPS"),
                                    ("seq_len", settings.max_seq_len(), "EXPLORER_MAX_SEQ_LEN"),
                                    ("batch_size", settings.max_batch(), "EXPLORER_MAX_BATCH")):
            if getattr(self, name) > cap:
                raise ExplorerError(f"{name} must be at most {cap} on this server ({variable}), "
                                    f"got {getattr(self, name)}.")


@dataclass
class Prepared:
    model: object
    tokenizer: object
    spec: specs.ModelSpec
    options: object
    device: str


def _dtype(precision: str, device: str):
    import torch

    if precision == "bf16":
        if device == "cuda" and not torch.cuda.is_bf16_supported():
            raise ExplorerError("This GPU does not support bf16; choose fp32.")
        return torch.bfloat16
    return torch.float32


def load_base(model_name: str, method: str, options, precision: str):
    """A fresh copy of the base model (training must never touch the cached inference copy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..models import registry as models

    hf_logging.disable_progress_bar()
    entry = models.resolve(model_name)
    models.ensure_files(entry)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = {"dtype": _dtype(precision, device), "use_safetensors": True, "trust_remote_code": False}
    if method == "qlora":
        from ..methods.qlora import quantization_config

        kwargs["quantization_config"] = quantization_config(options)
        kwargs["device_map"] = {"": device}
    tokenizer = AutoTokenizer.from_pretrained(entry.location, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(entry.location, **kwargs)
    if method == "qlora":
        from ..methods.qlora import release_file_mapping, use_portable_cpu_kernels

        use_portable_cpu_kernels(model)
        release_file_mapping(model)
    else:
        model.to(device)
    spec = specs.spec_from_dict(json.loads((Path(entry.location) / "config.json").read_text()), entry.name, "runnable")
    return model, tokenizer, spec, device


def prepare(config: TrainConfig, options_values: dict) -> Prepared:
    method = METHODS[config.method]
    options = method.parse_options(options_values)
    if config.method == "head" and options.head_type == "classifier":
        raise ExplorerError("The Fine-tune tab trains language-model heads; a classifier head needs labelled "
                            "classes, which the chat datasets do not provide. Choose head_type=lm.")
    model, tokenizer, spec, device = load_base(config.model, config.method, options, config.precision)
    method.validate(spec, options)
    return Prepared(model, tokenizer, spec, options, device)


def resolve_dataset(name: str):
    """A bundled task name, or the path of an uploaded JSONL/CSV file (parsed and checked)."""
    from ..data.tasks import TASKS

    if name in TASKS:
        return name
    path = Path(name)
    if not path.is_file():
        raise ExplorerError(f"Unknown dataset '{name}': use {', '.join(TASKS)} or the path of a JSONL/CSV file.")
    if path.stat().st_size > data.MAX_UPLOAD_BYTES:
        raise ExplorerError(f"{path.name} is larger than {data.MAX_UPLOAD_BYTES:,} bytes.")
    parsed = data.parse_upload(path.read_bytes(), path.name)
    if len(parsed.rows) < 2:
        raise ExplorerError("The dataset needs at least 2 valid rows (one to train on, one held out).")
    return parsed


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def batches(encoded: list, batch_size: int, pad_id: int, seed: int):
    """Endless shuffled passes over the data, one seed-determined order per epoch."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order.extend(more)
        chosen, order = order[:batch_size], order[batch_size:]
        yield data.collate([encoded[i] for i in chosen], pad_id)


def heldout_loss(model, encoded: list, pad_id: int, device: str, batch_size: int = 8, limit: int = 16) -> float:
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, min(len(encoded), limit), batch_size):
            batch = {k: v.to(device) for k, v in data.collate(encoded[start:start + batch_size], pad_id).items()}
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)


def reset_peak_memory(device: str) -> None:
    """Start measuring the peak from here: loading a model (QLoRA quantizes a float copy) peaks higher
    than training, and the Calculator predicts training."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    import ctypes
    import gc

    gc.collect()
    try:  # hand memory freed while loading back to the system, so the peak reflects training
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:  # Linux: "5" resets the peak RSS (VmHWM)
            handle.write("5")
    except OSError:
        pass


def peak_memory_bytes(device: str) -> int:
    """CUDA: max allocated; CPU: this process's peak resident memory since the last reset (libraries
    included), or its lifetime peak where the kernel offers no reset."""
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def make_optimizer(name: str, params, lr: float):
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=0.0)


def train(config: TrainConfig, options_values: dict, run_dir: Path,
          on_event: Callable[[dict], None] = lambda e: None, should_stop: Callable[[], bool] = lambda: False,
          inspect_model: Callable[[str, object], None] | None = None) -> dict:
    """Fine-tune, evaluate before and after, save the adapter atomically; return the run summary.

    ``inspect_model(stage, model)`` is called with stage "before" (method applied, nothing trained)
    and "after" (trained, before saving): tests use it to check what changed."""
    import torch

    from .. import evaluate

    started = time.time()
    seed_everything(config.seed)
    prep = prepare(config, options_values)
    method = METHODS[config.method]
    lr = config.learning_rate or method.default_lr
    train_rows, heldout_rows = data.load_dataset(resolve_dataset(config.dataset))
    task = evaluate.task_for(config.dataset)
    tok = prep.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    train_enc, truncated = data.encode_dataset(tok, train_rows, config.seq_len)
    heldout_enc, _ = data.encode_dataset(tok, heldout_rows, config.seq_len)
    on_event({"event": "data", "train_examples": len(train_enc), "heldout_examples": len(heldout_enc),
              "truncated": truncated, "task": task.name if task else None})
    eval_rows = heldout_rows[:config.eval_examples]
    score_base = evaluate.task_score(prep.model, tok, eval_rows, task, config.max_new_tokens, prep.device)
    if score_base is not None:
        on_event({"event": "score", "which": "base", "score": score_base})

    model = method.apply(prep.model, prep.spec, prep.options)
    if config.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()
    if inspect_model:
        inspect_model("before", model)
    model.train()
    trainable = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    measured_trainable = sum(p.numel() for p in trainable)
    predicted = calculator.calculate(prep.spec, config.method, prep.options, memory.TrainSettings(
        batch_size=config.batch_size, seq_len=config.seq_len, precision=config.precision,
        optimizer=config.optimizer, gradient_checkpointing=config.gradient_checkpointing), exact_mode="skip")
    on_event({"event": "start", "trainable_params": measured_trainable,
              "calculator_trainable_params": predicted.trainable_formula,
              "predicted_peak_bytes": predicted.training.total_bytes, "learning_rate": lr, "steps": config.steps,
              "device": prep.device})
    optimizer = make_optimizer(config.optimizer, trainable, lr)
    reset_peak_memory(prep.device)
    stream = batches(train_enc, config.batch_size, pad_id, config.seed)
    losses, eval_losses, stopped, tokens_seen = [], [], False, 0
    eval_losses.append((0, heldout_loss(model, heldout_enc, pad_id, prep.device)))
    on_event({"event": "eval", "step": 0, "eval_loss": eval_losses[-1][1]})
    train_seconds = 0.0  # time in training steps only: held-out evaluations are not throughput
    for step in range(1, config.steps + 1):
        if should_stop():
            stopped = True
            break
        step_start = time.time()
        step_loss = 0.0
        for _ in range(config.grad_accum):
            batch = {k: v.to(prep.device) for k, v in next(stream).items()}
            tokens_seen += int(batch["attention_mask"].sum())
            loss = model(**batch).loss / config.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        if not math.isfinite(step_loss):
            raise ExplorerError(f"The loss became {step_loss} at step {step}: lower the learning rate ({lr}).")
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        train_seconds += time.time() - step_start
        event = {"event": "step", "step": step, "loss": step_loss, "elapsed": train_seconds,
                 "eta": train_seconds / step * (config.steps - step),
                 "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
                 "peak_memory_bytes": peak_memory_bytes(prep.device)}
        if step % config.eval_every == 0 or step == config.steps:
            eval_losses.append((step, heldout_loss(model, heldout_enc, pad_id, prep.device)))
            event["eval_loss"] = eval_losses[-1][1]
        on_event(event)
    model.eval()
    if inspect_model:
        inspect_model("after", model)
    score_adapted = evaluate.task_score(model, tok, eval_rows, task, config.max_new_tokens, prep.device)
    if score_adapted is not None:
        on_event({"event": "score", "which": "adapted", "score": score_adapted})
    summary = {
        "run_id": run_dir.name, "run_dir": str(run_dir), "method": config.method, "model": config.model,
        "dataset": config.dataset, "steps": len(losses),
        "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
        "eval_loss_first": eval_losses[0][1], "eval_loss_last": eval_losses[-1][1],
        "trainable_params": measured_trainable, "calculator_trainable_params": predicted.trainable_formula,
        "task_score_base": score_base, "task_score_adapted": score_adapted,
        "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
        "peak_memory_bytes": peak_memory_bytes(prep.device), "predicted_peak_bytes": predicted.training.total_bytes,
        "stopped": stopped, "seconds": time.time() - started, "truncated_examples": truncated,
    }
    if losses:
        runs.save_artifacts(model, run_dir, config, options_values, method.uses_peft)
    runs.write_json(run_dir / "summary.json", summary)
    return summary
