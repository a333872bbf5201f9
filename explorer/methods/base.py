"""What every method provides: options, a formula with its breakdown, a real build, and how it differs.

A method module defines an ``Options`` dataclass (fields carry help text and bounds in their
metadata; the UI shows the help as tooltips) and a ``Method`` instance. Formulas answer from the
model's ``Arch`` instantly; ``apply`` builds the method for real (PEFT, or the project's own
modules) on a model, which may live on the meta device.

Everything that differs between methods is a field or hook of ``Method`` (how its base model is
loaded, whether it adds parameters, the dtype of its saved weights, how its runs combine, ...), as
PEFT keeps per-tuner behaviour on the tuner class: no module outside ``explorer/methods/`` tests a
method's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from ..costs.specs import ModelSpec
from ..errors import ExplorerError
from ..options import coerce


@dataclass(frozen=True)
class Adaptation:
    """What a method adds or unfreezes, in the terms the FLOP and memory formulas of explorer.costs read.

    The cost maths never imports the registry: it reads these fields only."""

    full: bool = False                          # every weight trainable (full fine-tuning)
    lora: dict = field(default_factory=dict)    # full module name -> rank (block linears, the head, embeddings)
    dora: bool = False
    lora_dropout: float = 0.0
    lora_params: dict = field(default_factory=dict)  # full parameter name -> rank (PEFT's target_parameters)
    trainable_modules: frozenset = frozenset()  # full module names trained as copies (PEFT's modules_to_save,
                                                # LN tuning's norms)
    ia3_out: frozenset = frozenset()            # full names of linears whose output is scaled
    ia3_in: frozenset = frozenset()             # full names of linears whose input is scaled (feed-forward)
    adapter_dim: int = 0
    adapter_after_attention: bool = False
    adapter_after_ffn: bool = False
    prompt_tokens: int = 0                      # prompt tuning: virtual input tokens
    prefix_tokens: int = 0                      # prefix tuning: virtual keys/values per layer
    prefix_mlp_hidden: int = 0                  # prefix tuning reparameterization MLP
    prefix_token_dim: int = 0
    prefix_layers: int = 0                      # layers PEFT gives virtual keys/values
    prompt_encoder: tuple = ()                  # matmuls that make the soft prompt, per sequence, outside the
                                                # blocks (p-tuning's MLP or LSTM): explorer.costs.flops.Product
    side_models: tuple = ()                     # networks run beside the model on the same tokens, each an
                                                # (Arch, Adaptation) pair counted as such (ShadowPEFT's backbone)
    head: str = ""                              # "lm" (LM head trainable), "classifier" or "embedding"
    num_classes: int = 0                        # outputs of a new pooled head: classes, or the embedding width
    vera: dict = field(default_factory=dict)    # VeRA: full module name -> rank of the shared frozen random matrices
    vera_shared: int = 0                        # ... whose entries (frozen buffers, not parameters) it adds
    products: dict = field(default_factory=dict)  # full linear name -> the matmuls another PEFT tuner adds to it
                                                  # (tuple of explorer.costs.flops.Product: LoHa, LoKr, OFT, ...)
    quantized_base: bool = False                # the frozen base's linear weights in 4-bit NF4 (QLoRA)
    double_quant: bool = True                   # ... with their block scales quantized too
    # What autograd keeps for backward beyond the terms above (explorer.costs.memory.activation_bytes), measured per
    # method with torch's saved-tensor hooks (tests/test_memory_saved.py), in elements at the activations' width:
    saved_per_token: int = 0                    # per token, over all its layers (a wider intermediate it keeps)
    saved_per_step: int = 0                     # once per forward, whatever the tokens: weight-sized tensors its
                                                # forward builds (a copy of W with ΔW added, a rotation, a basis)
    saved_per_sequence: int = 0                 # per sequence of the batch, whatever its length (LLaMA-Adapter's
                                                # prompt keys and values, repeated to every sequence)
    training_state: int = 0                     # fp32 numbers it keeps across steps besides the optimizer's
                                                # (AdaLoRA's importance scores)

    @property
    def pooled_head(self) -> bool:
        """A new head on the mean-pooled final hidden states (no LM head runs): a classifier or an embedding."""
        return self.head in ("classifier", "embedding")


@dataclass(frozen=True)
class TrainingData:
    """What ``Method.apply_for_training`` may read of the run: its length, a few of its training batches, and
    whether a stop was asked for (a build that reads data may take minutes: EVA's SVD on the CPU)."""

    steps: int
    batches: Callable  # (n) -> the first n training batches (dicts of tensors on the model's device)
    should_stop: Callable = lambda: False  # True: return at once, unfinished (the loop then stops before step 1)


@dataclass(frozen=True)
class Term:
    """One line of a parameter formula: e.g. q_proj: 8·(576+576) × 30 layers."""

    module: str
    count: int
    expression: str


def per_layer_term(module: str, per_layer: int, layers: int, expression: str) -> Term:
    return Term(module, per_layer * layers, f"{expression} × {layers} layers = {per_layer * layers:,}")


@dataclass
class Method:
    name: str
    title: str
    where: str                     # where it adapts, in a few words
    explanation: str
    when_to_use: str
    default_lr: float
    options_type: type
    mergeable: bool
    merge_reason: str              # why it merges, or why it cannot
    uses_peft: bool
    terms: Callable                # (spec, options) -> list[Term]
    adaptation: Callable           # (spec, options) -> Adaptation
    apply: Callable                # (model, spec, options) -> model with the method applied
    validate: Callable = lambda spec, options: None
    textbook: str = ""             # key of the chapter's claims (explorer.costs.textbook) its figures answer to
    new_model: bool = False        # trains plain weights of its own (full, head): nothing to merge
    family: str = ""               # "lora": LoRA and its variants, which share its rank, targets and claims
    quantized_base: bool = False   # its frozen base is loaded in 4-bit: merged into a de-quantized copy
    load_kwargs: Callable = lambda options, device: {}   # extra from_pretrained arguments for its base
    after_load: Callable = lambda model: None            # fix-ups of such a base once loaded
    adds_params: Callable = lambda spec, options: True   # False when it only unfreezes weights the model has
    saved_bytes_per_param: int = 4  # PEFT and our own modules save trainable weights in float32
    # (spec, options) -> the entries its saved adapter holds (and an unmerged reload serves), where they are not its
    # trained and frozen counts: p-tuning saves only the soft prompt its encoder makes; None = those counts.
    saved_params: Callable | None = None
    combinations: tuple = ()       # how two runs of it combine (explorer.compare.compose), e.g. ("cat",)
    mixed_batch: bool = False      # PEFT serves several of its adapters in one batch from one base (adapter_names)
    strength: bool = False         # PEFT's scale rescaling multiplies its whole update: 0 = the base, 1 = trained
    meta_forward_refusal: str = ""  # why its forward cannot run on the meta device (it reads values), if it cannot
    conv1d_layer: bool = True      # PEFT has a layer for GPT-2's Conv1D; False: the method refuses GPT-2 in one line
    # Why PEFT cannot build it on this model at all, "" where it can (LLaMA-Adapter knows three attention layouts):
    # (spec) -> the one line its validate raises, which the registry-wide tests expect on such a catalog model.
    model_refusal: Callable = lambda spec: ""
    unmerges: bool = True          # PEFT can undo its merge (unmerge_adapter); OSF's merge is one way
    artifact: str = "adapter"      # what one run of it saves, in words: "LoRA adapter", "soft prompt"
    peft_type: str = ""            # PEFT's peft_type in its saved adapter_config.json (PEFT-built methods)
    switches: dict = field(default_factory=dict)  # request keys that pick a sibling: {"use_dora": {True: "dora"}}
    check_training: Callable = lambda options: None      # refuse options the trainer cannot train
    literature: tuple = ()         # what its papers claim (shown on its card, labelled as claims, not measured here)
    in_default_race: bool = True   # in the race's default field (the LoRA variants are raced by naming them)
    frozen_terms: Callable = lambda spec, options: []    # what it adds that does not train (VeRA's shared matrices)
    data_kind: Callable = lambda options: "chat"         # the rows it trains on: "chat", "labelled" or "pairs"
    # Training hooks (explorer.train.loop). ``make_optimizer(model, options, lr, optimizer_cls, optimizer_kwargs)``
    # replaces the loop's own optimizer (LoRA+'s per-matrix learning rates); None keeps the loop's.
    make_optimizer: Callable | None = None
    # ``before_training(model, scratch_dir) -> dict``: called once the method is applied, before the first step;
    # returns extra arguments for saving (PiSSA and OLoRA keep their initial adapter in ``scratch_dir`` so the
    # save converts the result into a LoRA for the original base).
    before_training: Callable = lambda model, scratch: {}
    # ``apply_for_training(model, spec, options, data: TrainingData) -> model``: replaces ``apply`` when the loop
    # trains, for a method whose build reads the run (AdaLoRA's schedule length, EVA's activations of a few
    # training batches); None builds with ``apply``.
    apply_for_training: Callable | None = None
    # ``training_loss(model, batch) -> loss``: replaces the loop's loss (explorer.evaluate.loss_on_targets, the
    # language-model loss) where a tuner adds a term of its own (AdaLoRA's orthogonal regularisation, which PEFT's
    # forward adds to the model's loss); None keeps the loop's.
    training_loss: Callable | None = None
    # ``after_step(model, step, total_steps)``: called after each optimizer step, before the gradients are cleared
    # (AdaLoRA's rank allocation reads them: PEFT's update_and_allocate).
    after_step: Callable = lambda model, step, total_steps: None
    # Parameters it adds that never train and are not saved (AdaLoRA's ranknum, one per adapted layer): counted in
    # the model's total only.
    untrained_params: Callable = lambda spec, options: 0
    # Why a standard recipe (explorer.recipes: transformers' Trainer + PEFT's config) would not train it as the app
    # does, e.g. a training hook the recipe's train.py lacks; "" = a recipe expresses it.
    recipe_refusal: str = ""
    # The same for one setting of its options only (LoRA's EVA start, computed by the app's loop from the run's
    # batches): (options) -> the reason, or "" where a recipe expresses these options.
    recipe_refusal_for: Callable = lambda options: ""

    def parse_options(self, values: dict | None = None):
        """Options from loose values (UI widgets, CLI strings), checked; clear message on bad input."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(self.options_type)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ExplorerError(f"{self.title} has no option {', '.join(unknown)}; "
                                f"its options are: {', '.join(known) or 'none'}.")
        parsed = {name: coerce(known[name], value) for name, value in values.items()}
        return self.options_type(**parsed)

    @property
    def merge_summary(self) -> str:
        """One sentence on merging that never repeats itself: the reason of a method that cannot merge (or has
        nothing to merge) already says so; a mergeable one's reason says why it can."""
        if self.new_model or not self.mergeable:
            return self.merge_reason
        return f"Merges into the base weights: {self.merge_reason}"

    @property
    def title_in_sentence(self) -> str:
        """The title inside a sentence: "prompt tuning", but "LoRA" and "IA³" keep their capitals."""
        first = self.title.split()[0]
        return self.title[0].lower() + self.title[1:] if first[1:] == first[1:].lower() else self.title

    def trainable_formula(self, spec: ModelSpec, options) -> int:
        return sum(term.count for term in self.terms(spec, options))


def freeze(model) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def empty_adaptation(spec, options) -> Adaptation:
    return Adaptation()
