"""Server time per Calculator update, per catalog model (median and p95), as the UI runs it.

Usage: python bench/calc_latency.py [--repeats 20]

Each update is what a control change costs the server: formulas for the chosen method, the whole
family overview, and the charts and tables, with the exact count already cached (it runs at most once
per model and options, in a follow-up event). The first, uncached exact count is timed separately.
Target: at most 100 ms per update for any catalog model.
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
    result = calculator.from_request(model, "lora", {"r": r}, exact_mode="cached")
    family = calculator.compare_all(result.spec, result.settings, (result.method, result.options))
    view.headline(result), view.formula_table(result), view.flops_table(result), view.method_card(result)
    view.memory_figure(result), view.fits_table(result), view.family_figure(family), view.family_table(family)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    one_update("smollm2-135m", 8)  # imports and first-use costs out of the way
    print(f"{'model':<16} {'median ms':>10} {'p95 ms':>8} {'first exact count s':>20}")
    worst = 0.0
    for model in specs.catalog_names():
        start = time.perf_counter()
        calculator.from_request(model, "lora", {"r": 8, "target_preset": "all-linear"}, exact_mode="compute")
        exact_seconds = time.perf_counter() - start
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            one_update(model, 8)
            times.append(1000 * (time.perf_counter() - start))
        times.sort()
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        worst = max(worst, p95)
        print(f"{model:<16} {statistics.median(times):>10.1f} {p95:>8.1f} {exact_seconds:>20.2f}")
    print(f"worst p95: {worst:.1f} ms (target 100 ms): ratio {worst / 100:.2f}")


if __name__ == "__main__":
    main()
