"""Two runs to combine: opened and checked (same method, same base model, a combination their method offers), and
loaded as adapters "a" and "b" on one fresh base model. Shared by LoRA's combinations (compose.py) and prefix
tuning's key/value concatenation (prefix_concat.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ExplorerError
from ..train import runs
from .compose_demo import COMPOSABLE

DEFAULT_DENSITY = 0.5
DENSITY_TYPES = ("ties", "dare_linear", "dare_ties", "magnitude_prune")  # prune or drop factor entries
EQUAL_RANK_TYPES = ("linear",) + DENSITY_TYPES  # they mix the factors entry by entry: equal shapes needed


# --------------------------------------------------------------------------- checks


def check_pair(run_a: str, run_b: str, how: str, weights=(1.0, 1.0)):
    """Both runs opened and checked, the combination and weights validated: (Run A, Run B, weights)."""
    a, b = runs.open_run(run_a), runs.open_run(run_b)
    if a.folder == b.folder:
        raise ExplorerError(f"Run A and run B are the same run ({a.folder.name}): choose two different runs.")
    for label, run in (("A", a), ("B", b)):
        if not run.method.combinations:
            names = [f"{m.title_in_sentence} ({n})" for n, m in COMPOSABLE.items()]
            supported = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
            raise ExplorerError(f"Run {label} ({run.run_id}) uses {run.method.title} ({run.method.name}); "
                                f"composition supports {supported} runs only.")
    if a.method.name != b.method.name:
        raise ExplorerError(f"Run A is {a.method.title_in_sentence} and run B is {b.method.title_in_sentence}: "
                            "compose two runs of the same method.")
    if a.config.model != b.config.model:
        raise ExplorerError(f"Runs {a.run_id} and {b.run_id} were trained on different base models "
                            f"({a.config.model} and {b.config.model}); adapters compose only on one base model.")
    if how not in a.method.combinations:
        raise ExplorerError(f"'{how}' does not combine {a.method.title_in_sentence} runs: choose "
                            f"{', '.join(a.method.combinations)}.")
    if how in EQUAL_RANK_TYPES:
        ra, rb = (run.method.parse_options(run.options).r for run in (a, b))
        if ra != rb:
            raise ExplorerError(f"'{how}' needs adapters of equal rank, but run A has r={ra} and run B has "
                                f"r={rb}: use 'cat' (rank {ra + rb}), or runs trained with the same r.")
    for run in (a, b):
        adapter_dir(run)
    return a, b, check_weights(weights)


def check_weights(weights) -> tuple[float, float]:
    try:
        values = list(weights)
    except TypeError:
        values = None
    if values is None or len(values) != 2:
        raise ExplorerError(f"weights must be two numbers (one for run A, one for run B), got {weights!r}.")
    checked = []
    for label, value in zip("AB", values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not -2 <= value <= 2:
            raise ExplorerError(f"The weight of run {label} must be a finite number from -2 to 2, got {value!r}.")
        checked.append(float(value))
    return checked[0], checked[1]


def check_density(how: str, density) -> float | None:
    """The density of a combination that prunes (None for the others, which take none)."""
    if how not in DENSITY_TYPES:
        return None
    density = DEFAULT_DENSITY if density is None else density
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise ExplorerError(f"density must be a number above 0 and at most 1 (the share of entries '{how}' "
                            f"keeps), got {density!r}.")
    return float(density)


# --------------------------------------------------------------------------- building the combination


@dataclass
class Combination:
    """One PeftModel on a fresh base holding adapters "a", "b" and "combined"."""

    model: object
    tokenizer: object
    device: str
    method: str
    how: str
    weights: tuple[float, float]
    runs: tuple
    info: dict

    def select(self, variant: str):
        """The model with this variant's adapter ("A", "B" or "combined") active, in eval mode."""
        self.model.set_adapter({"A": "a", "B": "b", "combined": "combined"}[variant], inference_mode=True)
        return self.model.eval()


def adapter_dir(run) -> str:
    adapter = run.folder / runs.ADAPTER_DIR
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ExplorerError(f"The adapter of run {run.run_id} cannot be loaded: adapter_model.safetensors is "
                            "missing (only safetensors adapters are loaded).")
    return str(adapter)


def load_both(a, b):
    """A fresh base model with A's adapter as "a" and B's as "b" (loader errors turned into clear ones)."""
    from peft import PeftModel

    from ..models import loading

    precision = "bf16" if a.config.precision == b.config.precision == "bf16" else "fp32"
    loaded = loading.load_fresh(a.config.model, a.method, a.method.parse_options(a.options), precision)
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    expected = a.method.peft_type
    for name, run in (("a", a), ("b", b)):
        try:
            if name == "a":
                model = PeftModel.from_pretrained(model, adapter_dir(run), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(adapter_dir(run), adapter_name=name, is_trainable=False)
            found = model.peft_config[name].peft_type.value
        except Exception as error:  # corrupt or foreign files: any loader error means "cannot load"
            raise ExplorerError(f"The adapter of run {run.run_id} cannot be loaded (missing, incomplete or "
                                f"corrupt files): {str(error)[:300]}") from None
        if found != expected:
            raise ExplorerError(f"Run {run.run_id}'s adapter_config.json holds a {found} adapter, but its "
                                f"settings say {run.method.name}.")
    return model, tokenizer, device
