"""The calculator: one call turns (model, method, options, training settings) into every number.

Formulas answer at once; the exact meta-device count is computed at most once per combination
(explorer.calculator.exact caches it) and reported beside the formula with whether the two agree. Every
distinct question is computed once per server and shared (explorer.calculator.answers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..costs import memory, sharding
from ..costs.flops import FlopReport, flop_report
from ..costs.specs import ModelSpec
from ..errors import ExplorerError
from ..methods import METHODS
from ..methods import get as get_method
from ..methods.base import Term
from ..options import coerce
from . import answers, exact


@dataclass
class CalcResult:
    spec: ModelSpec
    method: str
    options: object
    settings: memory.TrainSettings
    terms: list[Term]
    trainable_formula: int
    total_params: int
    exact_counts: tuple[int, int] | None       # (trainable, total) from the meta-device model
    training: memory.Memory
    inference_bytes: float                     # weights (+ adapter) + KV cache
    kv_cache_bytes: float
    flops: FlopReport
    adapter_file_bytes: int
    adaptation: object = None                  # what the method adds, as the cost formulas read it
    per_gpu: sharding.PerGpu | None = None     # what each GPU holds under the chosen GPUs and sharding
    frozen_terms: list = dataclasses.field(default_factory=list)  # added but never trained (VeRA's shared matrices)

    @property
    def method_obj(self):
        return METHODS[self.method]

    @property
    def trainable(self) -> int:
        return self.exact_counts[0] if self.exact_counts else self.trainable_formula

    @property
    def agrees(self) -> bool | None:
        if self.exact_counts is None:
            return None
        return self.exact_counts == (self.trainable_formula, self.total_params_with_method)

    @property
    def total_params_with_method(self) -> int:
        """Base parameters plus what the method adds (full and head add nothing new)."""
        if not self.method_obj.adds_params(self.spec, self.options):
            return self.total_params
        return self.total_params + self.trainable_formula + self.method_obj.untrained_params(self.spec, self.options)

    def as_json(self) -> dict:
        m = self.method_obj
        f = self.flops
        return {
            "model": self.spec.name, "method": self.method, "options": dataclasses.asdict(self.options),
            "settings": dataclasses.asdict(self.settings),
            "trainable_params": self.trainable, "total_params": self.total_params_with_method,
            "trainable_percent": 100.0 * self.trainable / self.total_params_with_method,
            "trainable_formula": self.trainable_formula,
            "formula": [{"module": t.module, "count": t.count, "expression": t.expression} for t in self.terms],
            "frozen_formula": [{"module": t.module, "count": t.count, "expression": t.expression}
                               for t in self.frozen_terms],
            "exact": self.exact_counts is not None and bool(self.agrees),
            "exact_trainable_params": self.exact_counts[0] if self.exact_counts else None,
            "mergeable": m.mergeable, "merge_reason": m.merge_reason,
            "adapter_file_bytes": self.adapter_file_bytes,
            "memory": {**self.training.as_dict(), "per_gpu": self.per_gpu.as_dict()},
            "inference_memory": {"weights_and_adapter_bytes": self.inference_bytes - self.kv_cache_bytes,
                                 "kv_cache_bytes": self.kv_cache_bytes, "total_bytes": self.inference_bytes},
            "fits": {f"{gb}GiB": ok for gb, ok in memory.fits(self.per_gpu.total_bytes).items()},
            "fits_gpus": {f"{gb}GiB": {str(n): ok for n, ok in row.items()} for gb, row in self.fits_gpus().items()},
            "flops": {"formulas_exact": self.spec.arch.flops_exact,
                      "base_forward_per_token": f.base_forward_per_token,
                      "forward_per_token": f.forward_per_token,
                      "train_per_token": f.train_per_token,
                      "train_per_token_with_checkpointing": f.train_per_token_checkpointing,
                      "inference_overhead_per_token_unmerged": f.inference_overhead_per_token_unmerged,
                      "inference_overhead_per_token_merged": f.inference_overhead_per_token_merged,
                      "elementwise_overhead_per_token": f.elementwise_overhead_per_token},
        }


    def fits_gpus(self) -> dict[int, dict[int, bool]]:
        """GPU size -> GPU count -> whether each GPU holds its share (the chosen sharding)."""
        return sharding.fits_table(self.spec.arch, self.training, self.settings, bool(self.adaptation.full))


def parse_settings(values: dict | None) -> memory.TrainSettings:
    fields = {f.name: f for f in dataclasses.fields(memory.TrainSettings)}
    values = dict(values or {})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ExplorerError(f"Unknown setting {', '.join(unknown)}; settings are: {', '.join(fields)}.")
    return memory.TrainSettings(**{k: coerce(fields[k], v) for k, v in values.items()})


def calculate(spec: ModelSpec, method_name: str, options=None, settings=None, exact_mode: str = "compute") -> CalcResult:
    """exact_mode: "compute" (build on meta if not cached), "cached" (only if cached), "skip".

    Identical questions share one result (explorer.calculator.answers): the formulas' answer, and the same
    with the exact counts once they are known. Results are shared between users: read them, never change them.
    """
    method = get_method(method_name)
    options = options if options is not None else method.parse_options({})
    settings = settings or memory.TrainSettings()
    key = answers.question_key(spec, method_name, options, settings)
    formulas = answers.shared.get_or_compute(key, lambda: _formulas(spec, method_name, options, settings))
    counts = None
    if exact_mode == "compute":
        counts = exact.exact_counts(spec, method_name, options)
    elif exact_mode == "cached":
        counts = exact.cached(spec, method_name, options)
    if counts is None:
        return formulas
    return answers.shared.get_or_compute((key, counts), lambda: dataclasses.replace(formulas, exact_counts=counts))


def _formulas(spec: ModelSpec, method_name: str, options, settings: memory.TrainSettings) -> CalcResult:
    """Every number from the formulas (no exact count)."""
    method = get_method(method_name)
    method.validate(spec, options)
    arch = spec.arch
    terms = method.terms(spec, options)
    trainable = sum(t.count for t in terms)
    adaptation = method.adaptation(spec, options)
    training = memory.training_memory(arch, adaptation, trainable, settings)
    per_gpu = sharding.per_gpu(arch, training, settings, bool(adaptation.full))
    kv = memory.kv_cache_bytes(arch, adaptation, settings)
    frozen = method.frozen_terms(spec, options)
    saved = method.saved_params(spec, options) if method.saved_params else None  # p-tuning: its soft prompt only
    inference_weights = training.weights_bytes + (0 if method.mergeable else (trainable if saved is None else saved) * 2)
    flops = flop_report(arch, adaptation, settings.seq_len, method.mergeable)
    # What a method adds without training it is saved beside the trainable weights (PEFT's VeRA saves its shared
    # matrices: save_projection=True), so a run reloads without regenerating them.
    if saved is None:
        saved = trainable + sum(t.count for t in frozen)
    file_bytes = saved * method.saved_bytes_per_param
    return CalcResult(spec, method_name, options, settings, terms, trainable, arch.total_params(), None,
                      training, inference_weights + kv, kv, flops, file_bytes, adaptation, per_gpu, frozen)


def training_memory(spec: ModelSpec, method_name: str, options, trainable: int,
                    settings: memory.TrainSettings) -> memory.Memory:
    """Training memory of a method on a model (its adaptation says what is trainable and how the base is stored)."""
    return memory.training_memory(spec.arch, get_method(method_name).adaptation(spec, options), trainable, settings)


def compare_all(spec: ModelSpec, settings=None, chosen: tuple[str, object] | None = None) -> list[CalcResult]:
    """Every method at its default options (the chosen method at the user's options), formulas only."""
    results = []
    for name, method in METHODS.items():
        options = chosen[1] if chosen and chosen[0] == name else method.parse_options({})
        try:
            results.append(calculate(spec, name, options, settings, exact_mode="cached"))
        except ExplorerError:
            continue  # e.g. IA³ on a model with no default targets: left out of the overview
    return results


SETTING_KEYS = {f.name for f in dataclasses.fields(memory.TrainSettings)}


def from_request(model: str, method_name: str, values: dict | None = None, exact_mode: str = "compute",
                 config_text: str | None = None) -> CalcResult:
    """One entry point for the CLI and the API: loose key=value pairs, PEFT's option names where they exist.

    Settings keys (batch_size, seq_len, precision, optimizer, gradient_checkpointing, mixed_precision,
    num_gpus, sharding, offload) are split from the method's options; a method's switches pick a sibling (``use_dora=true`` turns LoRA into DoRA); a
    ``target_modules`` list selects the custom target preset of methods that have presets.
    """
    from ..costs import specs
    from ..models import specs as model_specs

    values = dict(values or {})
    spec = specs.parse_config_text(config_text) if config_text else model_specs.resolve(model)
    for key, siblings in get_method(method_name).switches.items():
        if key in values:
            switch = dataclasses.fields(dataclasses.make_dataclass("Switch", [(key, bool, False)]))[0]
            method_name = siblings.get(coerce(switch, values.pop(key)), method_name)  # "maybe": a clear error
    option_names = {f.name for f in dataclasses.fields(get_method(method_name).options_type)}
    if values.get("target_modules") and "target_preset" in option_names:
        values.setdefault("target_preset", "custom")
    settings = parse_settings({k: v for k, v in values.items() if k in SETTING_KEYS})
    options = get_method(method_name).parse_options({k: v for k, v in values.items() if k not in SETTING_KEYS})
    return calculate(spec, method_name, options, settings, exact_mode=exact_mode)
