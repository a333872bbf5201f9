"""Every bench runs end to end on the tiny model for a fixed count of rounds, never a time cap: a faster
machine fits more rounds in a second and could then print an interval and a verdict (what the benches print
is not asserted: timing targets live in the benches, measured on a quiet machine)."""

import importlib
import sys
from pathlib import Path

import pytest

from conftest import TINY

BENCH = Path(__file__).parent.parent / "bench"
sys.path.insert(0, str(BENCH))

VERDICTS = ("met", "missed", "not resolved at this noise level")


def run_bench(name: str, argv: list[str], capsys) -> str:
    importlib.import_module(name).main(argv)
    return capsys.readouterr().out


def final_rows(out: str, title: str) -> list[str]:
    """The final block's figure rows (after its title and header line)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title}"))
    assert lines[start + 1].split()[:3] == ["figure", "estimate", "interval"]
    return [line for line in lines[start + 2:] if line.strip()]


@pytest.mark.parametrize("name,argv,title,expected", [
    ("calc_latency", ["--model", TINY, "--rounds", "3"], "calc_latency",
     [f"{TINY}: p95 ms per update"]),
    ("train_throughput", ["--model", TINY, "--steps", "1", "--batch-size", "2", "--seq-len", "64", "--warmup", "0",
                          "--rounds", "1", "--peak-seconds", "0.05"], "train_throughput",
     ["app / plain tokens/s", "A/A: plain / plain", "model FLOP utilisation, app", "fp32 matmul peak GFLOP/s"]),
    ("merge_overhead", ["--model", TINY, "--methods", "lora", "--tokens", "2", "--warmup", "0", "--rounds", "1"],
     "merge_overhead", ["lora: A/A base / base", "lora: merged / base", "lora: adapted / base"]),
    ("memory_prediction", ["--model", TINY, "--runs", "1", "--malloc", "default", "--steps", "1", "--light", "lora"],
     "memory_prediction", ["lora (default allocator): predicted / measured"]),
    ("race", ["--model", TINY, "--entrants", "lora,ia3", "--steps", "2", "--set", "eval_examples=1",
              "--set", "probe_examples=1", "--set", "max_new_tokens=2", "--set", "batch_size=2",
              "--set", "seq_len=64", "--budgets", "1"], "race",
     ["race minutes", "worst entrant's share outside steps"]),
    ("serve_many", ["--model", TINY, "--adapters", "2", "--prompts", "1", "--tokens", "2", "--warmup", "0",
                    "--rounds", "1"], "serve_many",
     ["A/A: mixed / mixed", "merged in turn / mixed batch (seconds)", "swap per request / mixed batch (seconds)"]),
])
def test_bench_runs_on_the_tiny_model(cache, capsys, name, argv, title, expected):
    out = run_bench(name, argv, capsys)
    rows = final_rows(out, title)
    if name == "race":  # --budgets 1: the base and both entrants scored at 1 and at the race's 2 new tokens
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("task (probe) score at each"))
        assert lines[start + 1].split() == ["entrant", "1", "tok", "2", "tok"]
        table = [line.split() for line in lines[start + 2:start + 5]]
        assert [cells[0] for cells in table] == ["base", "lora", "ia3"]
        assert all(len(cells) == 5 and all(0 <= float(c.strip("()")) <= 1 for c in cells[1:]) for cells in table)
    for figure in expected:
        row = next(r for r in rows if r.startswith(figure + " "))
        assert row.rstrip().endswith(VERDICTS + ("—",))
    # one round (or run) is too few for an interval: no bench may claim a verdict from it (calc_latency's
    # 3 rounds are too few for a p95, checked row by row above; its summary lines follow the table)
    if name != "calc_latency":
        assert all("too few" in r and not r.endswith((" met", " missed")) for r in rows)


def test_race_bench_refuses_budgets_that_are_not_token_counts(capsys):
    for bad in ("8,x", "0", ""):
        with pytest.raises(SystemExit):
            run_bench("race", ["--budgets", bad], capsys)
        assert "expected whole numbers of new tokens from 1 to 512" in capsys.readouterr().err


def test_class_load_runs_on_the_tiny_model(app_url, capsys):
    """Against the tests' app (starting one more would take longer than the bench itself), a tiny training.
    Its windows are timed (a faster machine answers more questions in them), so the assertions hold at any
    speed: --quick runs one round, and one round has no A/A interval, so no figure can reach a verdict."""
    out = run_bench("class_load", ["--quick", "--url", app_url], capsys)
    rows = final_rows(out, "class_load")
    for figure in ("training: repeated p95 s", "training tokens/s: under load / alone",
                   "no training: repeated answers/s", "no training: mixed (1 in 3 new) p95 s"):
        row = next(r for r in rows if r.startswith(figure + " "))
        assert row.rstrip().endswith(VERDICTS + ("—",)) and not row.rstrip().endswith((" met", " missed"))
    assert "errors: 0" in out
    asked_again = out.split("asked again later: ")[1].split()[0]
    assert int(asked_again) > 0 and f"{asked_again} exact with the same trainable count" in out
