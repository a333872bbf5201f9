"""Server time per Calculator update, per catalog model (median and p95, with intervals), as the UI runs it.

Usage: python bench/calc_latency.py [--model NAME] [--rounds 200] [--seconds 600]
README figure: python bench/calc_latency.py --seconds 600

Each update is what a control change costs the server: formulas for the chosen method, the whole
family overview, and the charts and tables, with the exact count already cached (it runs at most once
per model and options, in a follow-up event). Timed separately, once per model: the derivation of its
per-block table from the meta-device model (explorer.costs.derive; cached per config; target ~3 s for a
400B-class model) and the first, uncached exact count.
Updates are timed in rounds (bench/measure.py), each round the update and the same update again (the A/A
control, the bench's resolution), in rotating order, up to ``--rounds`` or the model's share of the time
cap. Target: a p95 of at most 100 ms per update for every catalog model; the p95's 95% interval needs at
least 72 rounds. ``--model`` times one model (a catalog name or a runnable model, e.g. tiny-random-llama)
instead of every catalog model.
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
warnings.filterwarnings("ignore")

import measure  # noqa: E402
from explorer import calculator  # noqa: E402
from explorer.costs import specs  # noqa: E402
from explorer.models import specs as model_specs  # noqa: E402
from explorer.ui import calculator_view as view  # noqa: E402


def one_update(model: str, r: int) -> None:
    result = calculator.from_request(model, "lora", {"r": r, "lora_dropout": 0}, exact_mode="cached")
    family = calculator.compare_all(result.spec, result.settings, (result.method, result.options))
    view.headline(result), view.formula_table(result), view.flops_table(result), view.method_card(result)
    view.memory_figure(result), view.fits_table(result), view.family_figure(family), view.family_table(family)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="time this model only (default: every catalog model)")
    parser.add_argument("--rounds", type=int, default=200, help="most rounds per model")
    parser.add_argument("--seconds", type=float, default=600.0, help="time cap for the whole bench")
    args = parser.parse_args(argv)
    one_update("smollm2-135m", 8)  # imports and first-use costs out of the way
    models = [args.model] if args.model else specs.catalog_names()
    share = args.seconds / len(models)  # each model's time cap, first exact count included
    print(f"{'model':<22} {'rounds':>6} {'median ms':>10} {'p95 ms':>8} {'A/A':>6} {'derivation s':>13} "
          f"{'first exact count s':>20}")
    figures, derivations = [], {}
    for model in models:
        start = time.perf_counter()
        model_specs.resolve(model).arch  # the one-off derivation from the meta-device model (cached per config)
        derivations[model] = time.perf_counter() - start
        start = time.perf_counter()
        calculator.from_request(model, "lora", {"r": 8, "target_preset": "all-linear", "lora_dropout": 0},
                                exact_mode="compute")
        exact_seconds = time.perf_counter() - start
        rounds = measure.interleave({"update": measure.timed(one_update, model, 8)}, control="update",
                                    seconds=share - exact_seconds, max_rounds=args.rounds)
        p95 = rounds.interval("update", q=0.95).scaled(1000)
        print(f"{model:<22} {rounds.count:>6} {rounds.interval('update').estimate * 1000:>10.1f} {p95.estimate:>8.1f} "
              f"{rounds.control_ratio().estimate:>6.3f} {derivations[model]:>13.2f} {exact_seconds:>20.2f}", flush=True)
        figures.append(measure.Figure(f"{model}: p95 ms per update", p95, rounds.resolution(),
                                      measure.at_most(100), fmt="{:.1f}"))
    print(measure.final_block("calc_latency: server time per Calculator update", figures,
                              "p95 with its 95% interval; A/A: the same update timed twice per round"))
    print("worst: " + max(figures, key=lambda f: f.interval.estimate).line())
    print(f"every model's p95 <= 100 ms: {measure.all_of([f.verdict for f in figures])}")
    slowest = max(derivations, key=derivations.get)
    print(f"slowest one-off derivation: {slowest} {derivations[slowest]:.2f} s (target ~3 s for a 400B-class model; "
          "one measurement per model)")


if __name__ == "__main__":
    main()
