"""The serve-many command: replies per adapter from one mixed batch, the checks, memory and time figures, and
one clear line for bad input."""

import json

import pytest
from conftest import train_run
from test_cli_learn import assert_one_line_error, cli


@pytest.fixture(scope="module")
def two_runs(two_step_loras):
    return (two_step_loras[0],
            train_run("lora", "french", {"r": 4}, steps=2, learning_rate=0.05))


def test_serve_many_json_has_every_adapters_reply(capsys, two_runs):
    a, b = two_runs
    code, out, err = cli(capsys, "serve-many", "--runs", f"{a},{b}", "--prompt", "Ahoy", "--prompt", "Bonjour",
                         "--max-new-tokens", "3", "--no-measure", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["runs"] == [a, b] and result["batch_rows"] == 6
    assert set(result["replies"]) == {"base", a, b} and all(len(r) == 2 for r in result["replies"].values())
    assert all(result["greedy_match"].values())
    assert result["memory"] is None and result["throughput"] is None and result["calculator"] is None


def test_serve_many_text_shows_replies_memory_speed_and_the_calculator(capsys, two_runs):
    a, b = two_runs
    code, out, err = cli(capsys, "serve-many", "--runs", f" {a} , {b} ", "--prompt", "Ahoy", "--max-new-tokens", "2",
                         "--new-tokens", "1", "--repeats", "1", "--large-model", "llama-2-7b")
    assert code == 0, err
    assert out.startswith("one base (tiny-random-llama), 2 adapter(s), one batch of 3 rows")
    assert f"  {a}: " in out and "  base: " in out
    assert "mixed batch = each adapter alone: greedy identical for all" in out
    assert "memory (measured tensors): base + 2 adapters" in out and "2 merged copies" in out
    assert "tokens/s, merged models in turn" in out
    assert "Calculator, llama-2-7b (19,988,480 adapter parameters" in out
    assert out.rstrip().splitlines()[-1].startswith("One base answered 2 adapters")


@pytest.mark.parametrize("args, message", [
    ([], "serve-many needs --runs"),
    (["--runs", "{a}"], "serve-many needs --prompt"),
    (["--runs", ",", "--prompt", "hi"], "Choose at least one finished run"),
    (["--runs", "{a},{a}", "--prompt", "hi"], "is listed twice"),
    (["--runs", "{a},20990101-000000-lora-abcdef", "--prompt", "hi"], "There is no run"),
    (["--runs", "{a}", "--prompt", "hi", "--repeats", "x"], "--repeats must be a whole number"),
    (["--runs", "{a}", "--prompt", "hi", "--large-model", "no-such-model"], "no-such-model"),
])
def test_serve_many_bad_input_is_one_line(capsys, two_runs, args, message):
    a, _ = two_runs
    code, out, err = cli(capsys, "serve-many", *[arg.format(a=a) for arg in args])
    assert_one_line_error(code, err, message)
    assert out == ""
