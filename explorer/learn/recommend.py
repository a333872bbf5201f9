"""The Learn tab's decision helper: describe a job, get a method, its settings and the reasons.

How it decides (nothing else chooses):
1. ``RULES`` is one ordered table. The first rule whose condition matches the job gives an ordered
   list of candidate methods and a reason in plain words. The advice comes from the seed chapter
   (shared/seed/peft-family-chapter.txt, §19.3: "Why LoRA + QLoRA dominate" and its three worked
   scenarios) and the cited papers.
2. A latency-sensitive job skips candidates that cannot merge into the weights (chapter: adapters
   "pay runtime cost forever"; LoRA's merge is "the KEY operational reason LoRA won").
3. Each remaining candidate goes through ``explorer.calculator`` at the settings of ``LADDER``, from
   roomiest to leanest. The first candidate whose training memory fits is the recommendation; the
   next one that fits is the runner-up; the others are listed with the memory they would need.

Memory is counted in GiB (1024³ bytes), as ``explorer.costs.memory.fits`` counts an accelerator's "GB".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import calculator
from ..calculator.claims import claims_of
from ..costs import memory
from ..errors import ExplorerError
from ..human import human_number
from ..methods import METHODS
from ..models import specs as model_specs
from ..options import coerce, option

GOALS = {
    "style": "behaviour or style change",
    "knowledge": "new knowledge or output format",
    "classify": "classification",
    "embed": "sentence embeddings",
    "personas": "composable personas",
    "multi_tenant": "many customers on one base",
}


@dataclass
class Job:
    """What the user wants to fine-tune, on what, and how it will be served."""

    model: str = option("smollm2-1.7b", "Base model: a catalog name (e.g. llama-2-70b), a runnable model "
                        "(smollm2-135m-instruct) or the path of a config.json.")
    memory_gb: float = option(24.0, "Memory of the accelerator you will train on, in GB (GiB, as the "
                              "calculator counts it).", min=1.0, max=2000.0)
    examples: int = option(5000, "Number of training examples.", min=1, max=1_000_000_000)
    goal: str = option("style", "What the fine-tune should achieve: " +
                       "; ".join(f"{k} = {v}" for k, v in GOALS.items()) + ".", choices=tuple(GOALS))
    latency_sensitive: bool = option(False, "Serving latency matters: prefer methods that merge into the "
                                     "weights (no extra work per token).")
    many_adapters: bool = option(False, "Many fine-tunes will be served from one shared base model.")
    quick: bool = option(False, "A short sanity fine-tune (tens of optimizer steps, e.g. the Fine-tune tab's "
                         "default on a CPU): prefer the method that shows a change within that budget.")

    @classmethod
    def parse(cls, values: dict) -> "Job":
        """A Job from loose values (UI widgets, CLI strings, JSON); clear message on bad input."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ExplorerError(f"The decision helper has no field {', '.join(unknown)}; "
                                f"its fields are: {', '.join(fields)}.")
        job = cls(**{name: coerce(fields[name], value) for name, value in values.items()})
        model_specs.resolve(job.model)  # an unknown model raises ExplorerError naming the catalog
        return job


class Candidate(NamedTuple):
    method: str
    options: dict = {}


@dataclass(frozen=True)
class Rule:
    """When a job matches (goal, examples in [min_examples, max_examples), model size, flags), try
    ``candidates`` in order. ``None`` in a condition means "any"."""

    name: str
    goals: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    reason: str
    min_examples: int = 1
    max_examples: int | None = None
    min_params: float = 0
    many_adapters: bool | None = None
    quick: bool | None = None
    try_it: str = ""               # how to run it here, in a line (CLI and Fine-tune tab)

    def matches(self, job: Job, params: int) -> bool:
        return (job.goal in self.goals and job.examples >= self.min_examples
                and (self.max_examples is None or job.examples < self.max_examples)
                and params >= self.min_params
                and (self.many_adapters is None or job.many_adapters == self.many_adapters)
                and (self.quick is None or job.quick == self.quick))


LORA8, QLORA8 = Candidate("lora", {"r": 8}), Candidate("qlora", {"r": 8})
SWAPPABLE = (LORA8, QLORA8, Candidate("ia3"))

RULES: list[Rule] = [
    Rule("classify", ("classify",), (Candidate("head", {"head_type": "classifier"}), LORA8, QLORA8),
         "Classification needs the pretrained representations pooled, not changed: train a small head on the "
         "frozen backbone (the textbook section's feature extraction).",
         try_it="Try it on this machine: `python -m explorer train --model smollm2-135m-instruct --method head --set "
                "head_type=classifier --dataset topics --steps 30` (accuracy and macro-F1 against the majority class, "
                "and the same task trained with LoRA), or in the Fine-tune tab: Feature extraction, head_type "
                "classifier, with the bundled topics or your own labelled text."),
    Rule("embed", ("embed",), (Candidate("head", {"head_type": "embedding"}), LORA8, QLORA8),
         "Sentence embeddings need the pretrained representations pooled, not changed: train a pooling head on "
         "the frozen backbone (textbook section, scenario b: Sentence-BERT and E5 keep the backbone frozen).",
         try_it="Try it on this machine: `python -m explorer train --model smollm2-135m-instruct --method head --set "
                "head_type=embedding --dataset paraphrases --steps 60` (retrieval recall@1 of the frozen base "
                "against the trained head), or in the Fine-tune tab: Feature extraction, head_type embedding, with "
                "the bundled paraphrases or your own pairs."),
    Rule("personas", ("personas",), (Candidate("prefix", {"num_virtual_tokens": 20}),
                                     Candidate("prompt", {"num_virtual_tokens": 20}), LORA8, QLORA8),
         "Personas must stack: learned prefixes concatenate and attention weighs them, while stacked LoRA "
         "deltas on the same weights interfere (textbook section, scenario c)."),
    Rule("multi-tenant", ("multi_tenant",), SWAPPABLE,
         "One frozen base, one small adapter per customer, swapped per request; LoRA also merges for a "
         "customer whose latency matters (textbook section: 'multi-tenant friendly', reason 4)."),
    Rule("quick", ("style", "knowledge"), (LORA8, QLORA8, Candidate("ia3")),
         "A short sanity fine-tune (tens of steps): LoRA at rank 8 on every linear layer changes the replies "
         "visibly within that budget at its default learning rate, and merges into the weights. IA³ and soft "
         "prompts, the picks for very little data when training runs long, move more slowly in so few steps "
         "(the Race tab measures every method on your data).",
         quick=True),
    Rule("many-adapters", ("style", "knowledge"), SWAPPABLE,
         "Many fine-tunes share one base: small swappable adapters that can still merge (textbook section, reason 4).",
         many_adapters=True),
    Rule("lots-of-data", ("style", "knowledge"),
         (Candidate("full"), Candidate("lora", {"r": 64, "lora_alpha": 128}),
          Candidate("qlora", {"r": 64, "lora_alpha": 128})),
         "With 100K+ examples there is enough data to justify updating every weight when memory allows; "
         "otherwise a high-rank LoRA (textbook section: full FT for 'a big budget'; LoRA pulls ahead above 50K).",
         min_examples=100_000),
    Rule("few-examples-big-model", ("style",),
         (Candidate("prompt", {"num_virtual_tokens": 20}), Candidate("ia3"), LORA8, QLORA8),
         "Very few examples on a 10B+ model: a few soft tokens are enough to shift its behaviour and leave "
         "little to overfit (Lester et al. 2021; textbook section: 'why prompt tuning works at 10B+').",
         max_examples=1000, min_params=10e9),
    Rule("few-examples", ("style",), (Candidate("ia3"), LORA8, QLORA8),
         "Very few examples: IA³ only rescales existing features, with the fewest parameters to overfit, and "
         "merges into the weights (Liu et al. 2022; textbook section: IA³ for very small datasets).",
         max_examples=1000),
    Rule("behaviour", ("style",), (Candidate("lora", {"r": 16, "lora_alpha": 32}),
                                   Candidate("qlora", {"r": 16, "lora_alpha": 32}),
                                   Candidate("dora", {"r": 16, "lora_alpha": 32})),
         "A behaviour or style change: LoRA at rank 16 captures chat-style changes, the rank acts as a "
         "regulariser on small data, and it merges for zero inference overhead (textbook section, scenario a)."),
    Rule("knowledge", ("knowledge",), (Candidate("lora", {"r": 32, "lora_alpha": 64}),
                                       Candidate("dora", {"r": 32, "lora_alpha": 64}),
                                       Candidate("qlora", {"r": 32, "lora_alpha": 64}),
                                       Candidate("adapter", {"bottleneck_dim": 64})),
         "New knowledge or a new format needs more capacity: LoRA on every linear layer at rank 32; DoRA "
         "often closes part of the gap to full fine-tuning (Liu et al. 2024)."),
]

# Training settings tried for every candidate, roomiest first (explorer.memory.TrainSettings).
LADDER = (
    ("batch 4, 512 tokens, bf16, AdamW", memory.TrainSettings(batch_size=4)),
    ("batch 4, 512 tokens, bf16, AdamW, gradient checkpointing",
     memory.TrainSettings(batch_size=4, gradient_checkpointing=True)),
    ("batch 1, 512 tokens, bf16, 8-bit AdamW, gradient checkpointing",
     memory.TrainSettings(batch_size=1, optimizer="adamw8bit", gradient_checkpointing=True)),
)


@dataclass
class RunnerUp:
    method: str
    title: str
    options: dict
    reasons: list[str]


@dataclass
class Recommendation:
    method: str
    title: str
    options: dict
    reasons: list[str]
    fits: bool
    not_fitting: list[dict]            # [{"method", "needed_gb"}]
    runner_up: RunnerUp | None
    chapter_note: str
    rule: str = ""
    try_it: str = ""                   # the matching rule's pointer to a run on this machine
    settings: dict = field(default_factory=dict)
    calculation: dict = field(default_factory=dict)   # the calculator's CalcResult.as_json()

    def as_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["trainable_params"] = self.calculation["trainable_params"]
        out["training_memory_gb"] = self.calculation["memory"]["total_bytes"] / memory.GIB
        return out


def match_rule(job: Job, params: int) -> Rule:
    for rule in RULES:
        if rule.matches(job, params):
            return rule
    raise ExplorerError(f"No rule covers the goal '{job.goal}' with {job.examples:,} examples.")


@dataclass
class _Tried:
    candidate: Candidate
    calc: calculator.CalcResult     # at the first rung that fits, else at the leanest
    label: str
    fits: bool

    @property
    def needed_gb(self) -> float:
        return self.calc.training.total_bytes / memory.GIB


def _try(spec, candidate: Candidate, memory_gb: float) -> _Tried:
    options = METHODS[candidate.method].parse_options(candidate.options)
    tried = None
    for label, settings in LADDER:
        calc = calculator.calculate(spec, candidate.method, options, settings, exact_mode="skip")
        tried = _Tried(candidate, calc, label, calc.training.total_bytes <= memory_gb * memory.GIB)
        if tried.fits:
            break
    return tried


def _size(n: float) -> str:
    return next(f"{n / size:.3g} {unit}" for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("bytes", 1))
                if n >= size or unit == "bytes")


def _inference_reason(calc: calculator.CalcResult) -> str:
    """Extra FLOPs per token at inference, from explorer.costs.flops.flop_report (merged and unmerged)."""
    f, base = calc.flops, calc.flops.base_forward_per_token
    unmerged, merged = f.inference_overhead_per_token_unmerged, f.inference_overhead_per_token_merged
    if calc.adaptation.full:
        return "Inference: a new set of weights, exactly the base model's cost."
    if unmerged < 0:
        return (f"Inference: the new head replaces the LM head, {human_number(-unmerged)} FLOPs per token fewer "
                f"than the base model's {human_number(base)}.")
    pct = f"{100 * unmerged / base:.2g}% of the base model's {human_number(base)}"
    if not calc.method_obj.mergeable:
        return f"Inference: cannot merge, so every token costs {human_number(unmerged)} FLOPs more, forever ({pct})."
    unmerged_text = (f"{human_number(unmerged)} FLOPs per token ({pct})" if unmerged else
                     f"no matmul FLOPs, only {f.elementwise_overhead_per_token:,.0f} element-wise multiplications")
    return (f"Inference: merged into the weights, {human_number(merged)} extra FLOPs per token; served unmerged "
            f"(adapters swapped per request), {unmerged_text}.")


def _reasons(tried: _Tried, memory_gb: float) -> list[str]:
    calc = tried.calc
    j = calc.as_json()
    room = "fits in" if tried.fits else "is more than"
    return [
        f"{calc.method_obj.title}: {calc.trainable:,} trainable parameters, {j['trainable_percent']:.3g}% of "
        f"the {j['total_params']:,} in the model.",
        f"Training memory: {tried.needed_gb:.1f} GiB at {tried.label}, which {room} the {memory_gb:g} GiB available.",
        _inference_reason(calc),
        f"Saved result: {_size(calc.adapter_file_bytes)}"
        + (" (a whole new model)." if calc.adaptation.full else " per fine-tune."),
    ]


def recommend(job: Job) -> Recommendation:
    """The method for ``job``: the first candidate of the matching rule that fits in memory."""
    job = Job.parse(dataclasses.asdict(job))
    spec = model_specs.resolve(job.model)
    rule = match_rule(job, spec.arch.total_params())
    tried = [_try(spec, c, job.memory_gb) for c in rule.candidates]
    skipped = [t for t in tried if job.latency_sensitive and not t.calc.method_obj.mergeable]
    usable = [t for t in tried if all(t is not s for s in skipped)] or tried
    fitting = [t for t in usable if t.fits]
    best = fitting[0] if fitting else min(usable, key=lambda t: t.needed_gb)
    calc = best.calc
    reasons = [rule.reason]
    first = tried[0]
    if best is not first:  # the rule's reason argues for its first choice: say why another one won
        why = ("it cannot merge and serving is latency-sensitive" if first in skipped
               else f"it needs {first.needed_gb:.1f} GiB")
        reasons.append(f"The rule's first choice, {first.calc.method_obj.title}, is set aside ({why}); "
                       f"{calc.method_obj.title} is next in line.")
    reasons += _reasons(best, job.memory_gb)
    reasons += [f"Skipped {t.calc.method_obj.title}: serving is latency-sensitive and it cannot merge "
                f"(+{human_number(t.calc.flops.inference_overhead_per_token_unmerged)} FLOPs per token)." for t in skipped]
    not_fitting = [t for t in tried if not t.fits]
    if not_fitting:
        reasons.append("Would not fit in memory: " + "; ".join(
            f"{t.calc.method_obj.title} needs {t.needed_gb:.1f} GiB" for t in not_fitting) + ".")
    if not fitting:
        reasons.insert(0, f"Nothing fits in {job.memory_gb:g} GiB. The leanest option, {calc.method_obj.title}, "
                          f"needs {best.needed_gb:.1f} GiB even at {best.label}: use an accelerator with at least "
                          f"{math.ceil(best.needed_gb)} GiB, several GPUs, or a smaller base model.")
    runner = next((t for t in fitting if t is not best), None)
    return Recommendation(
        method=calc.method, title=calc.method_obj.title, options=dataclasses.asdict(calc.options),
        reasons=reasons, fits=bool(fitting),
        not_fitting=[{"method": t.calc.method, "needed_gb": round(t.needed_gb, 2)} for t in not_fitting],
        runner_up=runner and RunnerUp(runner.calc.method, runner.calc.method_obj.title,
                                      dataclasses.asdict(runner.calc.options), _reasons(runner, job.memory_gb)),
        chapter_note=" ".join(chapter_notes(spec, best)), rule=rule.name, try_it=rule.try_it,
        settings=dataclasses.asdict(calc.settings), calculation=calc.as_json())


# What each kind of training data asks of the decision helper (explorer.data.sources' kinds).
GOAL_OF_KIND = {"chat": "style", "labelled": "classify", "pairs": "embed"}


def this_machine_gb() -> float:
    """Memory to train in here: the first GPU's, else the memory this machine has free now (GiB)."""
    import psutil
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / memory.GIB
    return max(1.0, psutil.virtual_memory().available / memory.GIB)


def for_data(model: str, kind: str, examples: int, memory_gb: float) -> Recommendation:
    """The Fine-tune tab's pick for a short fine-tune of ``model`` on ``examples`` rows of ``kind`` data, with
    ``memory_gb`` of memory to train in (this machine's)."""
    return recommend(Job(model=model, memory_gb=memory_gb, examples=max(1, examples),
                         goal=GOAL_OF_KIND.get(kind, "style"), quick=True))


# ---- Where exact numbers contradict the chapter (computed, never copied) ----------------------------

LORA_SHARE = (0.5, 2.0)              # chapter: "~0.5-2% of full-FT parameters trainable"
QLORA_70B_GB = 24                    # chapter: "fine-tuning a 70B model on a 24GB GPU is routine"


def chapter_notes(spec, tried: _Tried) -> list[str]:
    """The textbook section's figures for the recommended method, checked against the calculator."""
    calc, notes = tried.calc, []
    for checked in claims_of(calc.method_obj):
        if abs(checked.ratio - 1) > 0.1:
            notes.append(f"The textbook section gives {checked.claim.what} on Llama-2-7B as ≈{human_number(checked.claim.claimed)}; "
                         f"the exact figure is {checked.exact:,.0f} {checked.unit}: {checked.claim.reason}")
    if calc.method_obj.family == "lora":
        share = 100 * calc.trainable / calc.total_params_with_method
        if not LORA_SHARE[0] <= share <= LORA_SHARE[1]:
            notes.append(f"The textbook section says LoRA trains ~0.5-2% of the parameters; here r={calc.options.r} trains "
                         f"{calc.trainable:,}, {share:.2g}% of {spec.name}.")
    if calc.method_obj.quantized_base and spec.arch.total_params() >= 50e9:
        leanest = min(_try(spec, Candidate(calc.method, dataclasses.asdict(calc.options)), 0).needed_gb,
                      tried.needed_gb)
        card = next((gb for gb in memory.ACCELERATORS_GB if leanest <= gb), None)
        if leanest > QLORA_70B_GB:
            notes.append(f"The textbook section says QLoRA fine-tunes a 70B model on a {QLORA_70B_GB} GB GPU; the 4-bit base "
                         f"of {spec.name} alone takes {calc.training.weights_bytes / memory.GIB:.1f} GiB and training "
                         f"needs at least {leanest:.1f} GiB, so it takes "
                         + (f"a {card} GB card" if card else "more than one card") + f", not {QLORA_70B_GB} GB.")
    return notes


# ---- The chapter's three worked scenarios -----------------------------------------------------------

class Scenario(NamedTuple):
    job: Job
    method: str        # what the chapter picks
    summary: str       # the chapter's advice, in short


SCENARIOS: dict[str, Scenario] = {
    "support-bot-70b": Scenario(
        Job("llama-2-70b", 48.0, 5000, "style", latency_sensitive=True),
        "qlora", "(a) Customer-support chatbot on a 70B base with 5K examples: QLoRA at rank 16-32 on one "
                 "24-48 GB GPU; not full FT (multi-GPU, too few examples), not adapters (latency over millions "
                 "of requests), not prefix tuning (weaker at 70B)."),
    "sentence-embeddings-1b": Scenario(
        # The catalog has no 1B Llama; SmolLM2-1.7B is the closest ~1B base.
        Job("smollm2-1.7b", 24.0, 10000, "embed"),
        "head", "(b) Sentence embeddings from a 1B base: feature extraction with a new pooling head on the "
                "frozen backbone; not LoRA (changes generation), not full FT (overkill)."),
    "composable-personas": Scenario(
        Job("llama-2-7b", 24.0, 2000, "personas", many_adapters=True),
        "prefix", "(c) Composable personas: prefix tuning, because prefixes stack cleanly where stacked "
                  "LoRAs interfere (LoRAHub or DoRA are the modular-LoRA alternatives)."),
}
