"""bench/gpu_check.py where no GPU is lent: it refuses clearly without CUDA, and its whole path (the app's run,
the plain loop, Compare's merge check, the table) runs as a CPU dry run on the tiny model."""

import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_refuses_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main([])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == gpu_check.NO_CUDA


def test_a_cpu_dry_run_fills_every_column_from_real_runs(capsys, cache):
    rows = gpu_check.main(["--model", TINY, "--methods", "lora,prompt", "--steps", "2", "--batch-size", "2",
                           "--seq-len", "64", "--allow-cpu"])
    out = capsys.readouterr().out
    lora, prompt = rows
    assert lora.trainable == lora.calculator_trainable > 0 and prompt.trainable == prompt.calculator_trainable
    assert lora.greedy_match is True and 0 <= lora.merge_max_logit_diff < 1e-3
    assert prompt.merge_max_logit_diff is None and prompt.not_mergeable
    assert all(r.peak_bytes > 0 and r.predicted_bytes > 0 and r.plain_tokens_per_second > 0 for r in rows)
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 4 and "peak GiB (process RSS)" in table[0]
    assert table[3].split(" | ")[8] == "cannot merge"
    assert "this was a CPU dry run" in out
