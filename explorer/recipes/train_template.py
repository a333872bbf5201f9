"""Train the run again with the standard tools: transformers' Trainer + PEFT, launched by accelerate.

    bash launch.sh                                   # the launch the README chose for your GPUs
    accelerate launch --config_file accelerate/ddp.yaml --num_processes 4 train.py

The settings below are the run's, exported by PEFT Explorer. MODEL=... (environment) overrides the base
model. The adapter lands in output/ (adapter_config.json + adapter_model.safetensors, for
PeftModel.from_pretrained), with output/metrics.json: the training losses and the held-out loss before and
after training.

Data formatting is the app's (explorer/data/chat.py): each conversation goes through the model's chat template
(or "User: ...\\nAssistant: ..." for a model without one), and only the assistant's replies and the
end-of-turn token after each are trained on (labels -100 elsewhere): a token counts when its characters lie
inside a reply. TRL's SFTTrainer is not used: its assistant-only loss needs a chat template with
{% generation %} markers, which SmolLM2's and most others' do not have.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

SETTINGS: dict = {}  # filled in by PEFT Explorer's export

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- data, as the app formats it


def special_strings(tokenizer) -> list[str]:
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    found |= {str(t.content) for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values() if t.special}
    return sorted((s for s in found if len(s) > 1), key=len, reverse=True)


def neutralise(tokenizer, text: str) -> str:
    """A special-token string inside user text gets a zero-width space after its first character, so that text
    can never end a turn early (prompt injection) or shift the labels."""
    specials = special_strings(tokenizer)
    if not specials or not any(s in text for s in specials):
        return text
    pattern = re.compile("|".join(re.escape(s) for s in specials))
    return pattern.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        parts = [f"{m['role'].capitalize()}: {m['content']}"
                 f"{(tokenizer.eos_token or '') if m['role'] == 'assistant' else ''}\n" for m in messages]
        return "".join(parts) + ("Assistant:" if generation_prompt else "")
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Character spans of each assistant reply plus the end-of-turn token right after it."""
    specials, eos, spans = special_strings(tokenizer), tokenizer.eos_token, []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:k], generation_prompt=True)
        through = render(tokenizer, messages[:k + 1])
        if not (full.startswith(before) and full.startswith(through)):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        turn = full[len(before):len(through)]
        at = turn.find(message["content"])
        if at < 0:  # the template rewrote the reply: learn the whole turn
            spans.append((len(before), len(before) + len(turn.rstrip())))
            continue
        start = len(before) + at
        end = start + len(message["content"])
        closers = ([eos] if eos else []) + specials + ([] if getattr(tokenizer, "chat_template", None) else ["\n"])
        for closer in closers:
            if closer and full.startswith(closer, end):
                end += len(closer)
                break
        spans.append((start, end))
    return spans


def encode(tokenizer, messages: list[dict], max_len: int) -> dict:
    """input_ids and labels (-100 except on the assistant's tokens), cut to max_len tokens."""
    messages = [{"role": m["role"], "content": neutralise(tokenizer, m["content"])} for m in messages]
    full = render(tokenizer, messages)
    spans = assistant_spans(tokenizer, messages, full)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    inside = [any(a < end and b > start for start, end in spans) and b > a for a, b in encoded["offset_mapping"]]
    labels = [token if keep else -100 for token, keep in zip(ids, inside)]
    return {"input_ids": ids[:max_len], "labels": labels[:max_len]}


def read_rows(name: str) -> list[dict]:
    with (HERE / "data" / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def encode_rows(tokenizer, rows: list[dict], max_len: int) -> list[dict]:
    """Examples whose replies were cut off entirely are dropped (they have nothing to learn)."""
    examples = [encode(tokenizer, row["messages"], max_len) for row in rows]
    return [e for e in examples if any(label != -100 for label in e["labels"])]


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right padding; padding gets attention 0 and label -100."""
    import torch

    width = max(len(e["input_ids"]) for e in batch)
    pad = lambda seq, value: list(seq) + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in batch]),
            "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in batch]),
            "labels": torch.tensor([pad(e["labels"], -100) for e in batch])}


# --------------------------------------------------------------------------- training


def load_model(name: str, cpu: bool):
    import torch
    from peft import get_peft_config, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.bfloat16 if SETTINGS["precision"] == "bf16" else torch.float32}
    if SETTINGS.get("quantization"):  # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes)
        kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(dict(SETTINGS["quantization"]))
    if cpu:
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    return get_peft_model(model, get_peft_config(dict(SETTINGS["peft_config"])))


def main() -> None:
    import torch
    from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

    cpu = os.environ.get("CPU_ONLY") == "1" or not torch.cuda.is_available()
    name = os.environ.get("MODEL") or SETTINGS["model"]
    if not os.path.isabs(name) and (HERE / name).is_dir():
        name = str(HERE / name)  # a model folder shipped inside the recipe
    set_seed(SETTINGS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(name)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train = encode_rows(tokenizer, read_rows("train.jsonl"), SETTINGS["seq_len"])
    heldout = encode_rows(tokenizer, read_rows("heldout.jsonl"), SETTINGS["seq_len"])
    model = load_model(name, cpu)
    args = TrainingArguments(
        output_dir=str(HERE / "checkpoints"), max_steps=SETTINGS["steps"], seed=SETTINGS["seed"],
        data_seed=SETTINGS["seed"], per_device_train_batch_size=SETTINGS["batch_size"],
        per_device_eval_batch_size=SETTINGS["batch_size"], gradient_accumulation_steps=SETTINGS["grad_accum"],
        learning_rate=SETTINGS["learning_rate"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim=SETTINGS["optim"], bf16=SETTINGS["precision"] == "bf16" and not cpu,
        gradient_checkpointing=SETTINGS["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1, save_strategy="no",
        report_to=[], remove_unused_columns=False, use_cpu=cpu, ddp_backend="gloo" if cpu else None)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=heldout,
                      data_collator=lambda batch: collate(batch, pad_id))
    before = trainer.evaluate()["eval_loss"] if heldout else None
    trainer.train()
    after = trainer.evaluate()["eval_loss"] if heldout else None
    if trainer.is_fsdp_enabled:  # gather the sharded adapter into whole tensors before saving
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(HERE / "output"))  # PEFT's adapter files, written by the main process
    if trainer.is_world_process_zero():
        (HERE / "output" / "training_args.bin").unlink(missing_ok=True)  # a pickle, not part of an adapter
        import torch.distributed as dist

        metrics = {"train_losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
                   "heldout_loss_before": before, "heldout_loss_after": after, "steps": trainer.state.global_step,
                   "num_processes": trainer.args.world_size,
                   "distributed_backend": dist.get_backend() if dist.is_available() and dist.is_initialized()
                   else None, "device": str(trainer.args.device), "model": name}
        (HERE / "output" / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
