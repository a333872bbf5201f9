"""How the memory predictions fared on this machine: read from its finished runs' summaries.

Every finished run (chat, or a classifier or embedding head: explorer.train.heads) stores its measured peak
("peak_memory_bytes") beside its predicted process peak ("peak_memory_predicted_bytes": the Calculator's terms
plus the runtime baseline, explorer.costs.memory.process_peak). The runs folder survives a restart, so the record is read afresh from it each time it is asked
for. Runs from before the prediction counted the runtime baseline have no "peak_memory_predicted_bytes" and
are left out: their prediction described something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import runs


@dataclass(frozen=True)
class Record:
    method: str
    ratios: tuple[float, ...]            # measured / predicted, one per run
    baselines: tuple[float, ...]         # the runtime baseline each run measured (0 on CUDA)

    @property
    def runs(self) -> int:
        return len(self.ratios)

    @property
    def low(self) -> float:
        return min(self.ratios)

    @property
    def high(self) -> float:
        return max(self.ratios)


def pair(summary: dict) -> tuple[float, float, float] | None:
    """(measured, predicted, runtime baseline) of a finished run, or None if it has no comparable pair."""
    measured, predicted = summary.get("peak_memory_bytes"), summary.get("peak_memory_predicted_bytes")
    if not (isinstance(measured, (int, float)) and isinstance(predicted, (int, float))) or min(measured, predicted) <= 0:
        return None
    baseline = summary.get("runtime_baseline_bytes")
    return float(measured), float(predicted), float(baseline) if isinstance(baseline, (int, float)) else 0.0


def key(method: str, data_kind: str = "chat") -> str:
    """A record's key: the method, and for a classifier or embedding head its data kind too (an LM head, a
    classifier and an embedding head hold different memory under the one method "head")."""
    return method if data_kind == "chat" else f"{method} ({data_kind})"


def records(folders: list[Path] | None = None, model: str | None = None) -> dict[str, Record]:
    """Per method (``key``), the runs of this machine (newest first) that stored both peaks; ``model`` keeps only
    its runs."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    for folder in runs.run_folders() if folders is None else folders:
        summary = runs.read_json(folder / "summary.json", {})
        if not isinstance(summary, dict) or (model and summary.get("model") != model):
            continue
        measured_pair = pair(summary)
        if measured_pair is None or not isinstance(summary.get("method"), str):
            continue
        measured, predicted, baseline = measured_pair
        kind = summary.get("data_kind") if isinstance(summary.get("data_kind"), str) else "chat"
        ratios, baselines = found.setdefault(key(summary["method"], kind), ([], []))
        ratios.append(measured / predicted)
        baselines.append(baseline)
    return {method: Record(method, tuple(r), tuple(b)) for method, (r, b) in found.items()}


def cpu_runtime_baseline(all_records: dict[str, Record]) -> float | None:
    """The largest runtime baseline among CPU runs here (a CUDA run stores 0), or None with no CPU run: what the
    Calculator adds for a run on this machine's CPU."""
    cpu = [b for r in all_records.values() for b in r.baselines if b > 0]
    return max(cpu) if cpu else None


def line(record: Record | None) -> str:
    """The sentence beside the Calculator's memory figure."""
    if record is None:
        return "no run of this method here yet: no track record for its memory prediction on this machine"
    if record.runs == 1:
        return f"on 1 run here: measured / predicted {record.low:.2f}"
    return f"on {record.runs} runs here: measured / predicted {record.low:.2f}–{record.high:.2f}"
