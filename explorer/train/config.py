"""A run's training settings: one dataclass that the Fine-tune tab, its API, the CLI and saved runs all parse.

The hosting caps (EXPLORER_MAX_STEPS, EXPLORER_MAX_SEQ_LEN, EXPLORER_MAX_BATCH) are enforced here, so
every way of starting a run goes through them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import settings
from ..data import scores, sources
from ..errors import ExplorerError
from ..methods import DEFAULT_METHOD, METHODS
from ..options import coerce, option


@dataclass
class TrainConfig:
    model: str = option("smollm2-135m-instruct", "Runnable model to fine-tune.")
    method: str = option(DEFAULT_METHOD, "Method from the registry.", choices=tuple(METHODS))
    dataset: str = option("pirate", "A bundled dataset (chat: pirate, french, json_extract, sentiment; labelled text: "
                          "topics; paraphrase pairs: paraphrases) or an uploaded file.")
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
    eval_loss_examples: int = option(16, "Held-out examples the held-out loss is measured on.", min=1, max=1000)
    max_new_tokens: int = option(32, "Tokens generated per held-out example for the task score.", min=1, max=512)
    probe_examples: int = option(10, "General-knowledge questions (capitals, arithmetic, colours...) asked before "
                                 "and after training to see what the fine-tune forgot; 0 = none.", min=0, max=80)
    watch_every: int = option(5, "Watch it learn: a few held-out questions answered at step 0 and every this many "
                              "steps while it trains (greedy, short replies); 0 = off.", min=0, max=100_000)
    watch_prompts: int = option(2, "How many held-out questions the watch asks.", min=1, max=8)
    score_base: bool = option(True, "Score the base model too (task score, probe) before training, and say what "
                              "the fine-tune learned (resemblance, facts recalled, general questions); a race "
                              "scores the base once for all its entrants.")
    score: str = option("", "How held-out replies of uploaded data are scored against their reference: exact, "
                        "contains, token_f1 or regex:PATTERN (empty = held-out loss only). Bundled datasets "
                        "use their own score.")

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
        config.score = scores.check(config.score)
        if caps:
            config.check_caps()
        return config

    def check_caps(self) -> None:
        """Refuse settings above this server's hosting caps, naming the setting that sets each cap."""
        for name, cap, variable in (("steps", settings.max_steps(), "EXPLORER_MAX_STEPS"),
                                    ("seq_len", settings.max_seq_len(), "EXPLORER_MAX_SEQ_LEN"),
                                    ("batch_size", settings.max_batch(), "EXPLORER_MAX_BATCH")):
            if getattr(self, name) > cap:
                raise ExplorerError(f"{name} must be at most {cap} on this server ({variable}), "
                                    f"got {getattr(self, name)}.")


def check_dataset(config: TrainConfig, options_values: dict) -> None:
    """Refuse, in one line and before anything is created or loaded, a dataset of another kind than the method
    trains on (chat rows, labelled text or paraphrase pairs: the method's ``data_kind``), or an uploaded file
    that cannot be trained on (its columns unknown, too few rows: read whole here, as the run will read it)."""
    method = METHODS[config.method]
    kind = method.data_kind(method.parse_options(options_values))
    sources.require_kind(config.dataset, kind, method.title)
    sources.check_readable(config.dataset, kind)
