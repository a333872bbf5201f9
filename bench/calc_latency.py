"""Server time per Calculator update, per catalog model (median and p95), as the UI runs it.

Usage: python bench/calc_latency.py [--repeats 20] [--models a,b,...]

Each update is what a control change costs the server: formulas for the chosen method, the whole
family overview, and the charts and tables, with the exact count already cached (it runs at most once
per model and options, in a follow-up event). Timed separately, once per model: the derivation of its
per-block table from the meta-device model (explorer.costs.derive; cached per config; target ~3 s for a
400B-class model) and the first, uncached exact count. Target: at most 100 ms per update for any catalog
model.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
warnings.filterwarnings("ignore")

from explorer import calculator  # noqa: E402
from explorer.costs import specs
from explorer.ui import calculator_view as view  # noqa: E402


def one_update(model: str, r: int) -> None:
    result = calculator.from_request(model, "lora", {"r": r, "lora_dropout": 0}, exact_mode="cached")
    family = calculator.compare_all(result.spec, result.settings, (result.method, result.options))
    view.headline(result), view.formula_table(result), view.flops_table(result), view.method_card(result)
    view.memory_figure(result), view.fits_table(result), view.family_figure(family), view.family_table(family)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default="", help="comma-separated catalog names (default: the whole catalog)")
    args = parser.parse_args()
    one_update("smollm2-135m", 8)  # imports and first-use costs out of the way
    print(f"{'model':<18} {'median ms':>10} {'p95 ms':>8} {'derivation s':>13} {'first exact count s':>20}")
    worst, worst_derivation = 0.0, 0.0
    for model in [m for m in args.models.split(",") if m] or specs.catalog_names():
        spec = specs.catalog_spec(model)
        start = time.perf_counter()
        spec.arch  # the one-off derivation from the meta-device model (cached per config)
        derivation = time.perf_counter() - start
        worst_derivation = max(worst_derivation, derivation)
        start = time.perf_counter()
        calculator.from_request(model, "lora", {"r": 8, "target_preset": "all-linear", "lora_dropout": 0},
                                exact_mode="compute")
        exact_seconds = time.perf_counter() - start
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            one_update(model, 8)
            times.append(1000 * (time.perf_counter() - start))
        times.sort()
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        worst = max(worst, p95)
        print(f"{model:<18} {statistics.median(times):>10.1f} {p95:>8.1f} {derivation:>13.2f} {exact_seconds:>20.2f}")
    print(f"worst p95: {worst:.1f} ms (target 100 ms): ratio {worst / 100:.2f}")
    print(f"slowest derivation: {worst_derivation:.2f} s (target ~3 s for a 400B-class model)")


if __name__ == "__main__":
    main()
