"""The command line: JSON outputs and one-line errors with a non-zero exit, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.models import provision

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def run_cli_in_process(capsys, *args) -> tuple[int, str]:
    """The same entry point without a new interpreter (imports cost ~10 s per process)."""
    from explorer.cli.main import main

    code = main(list(args))
    return code, capsys.readouterr().err


def test_models_json(cache):
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows[provision.BUNDLED_NAME]["parameters"] == 134_515_008
    assert provision.TINY_NAME in rows


def test_generate_json_on_bundled_model(cache):
    result = run_cli("generate", "--model", provision.BUNDLED_NAME, "--prompt", "What is the capital of France?",
                     "--max-new-tokens", "20", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"model", "prompt", "completion", "new_tokens", "seconds"}
    assert "Paris" in out["completion"] and out["new_tokens"] > 0


@pytest.mark.parametrize("args, message", [
    (["--model", "nope", "--prompt", "hi"], "Unknown model 'nope'"),
    (["--model", provision.TINY_NAME, "--prompt", "   "], "prompt is empty"),
    (["--model", provision.TINY_NAME, "--prompt", "hi", "--max-new-tokens", "-1"], "max new tokens"),
    (["--model", "/", "--prompt", "hi"], "no config.json"),
])
def test_generate_errors_are_one_line(cache, capsys, args, message):
    code, err = run_cli_in_process(capsys, "generate", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_error_in_a_real_process_is_one_line_and_exit_2(cache):
    result = run_cli("generate", "--model", "nope", "--prompt", "hi")
    assert result.returncode == 2 and "Unknown model 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
