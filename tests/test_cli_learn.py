"""The recommend and compose commands: JSON outputs match the library's, text outputs say the result,
and bad input gets one "error:" line on stderr with exit status 2, never a traceback."""

import json
import shutil

import pytest
from conftest import TINY, train_run

from explorer.cli.main import main
from explorer.learn import recommend
from explorer.train import runs


def cli(capsys, *args) -> tuple[int, str, str]:
    """main() in this process (a new interpreter costs seconds of imports): (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, message):
    assert code == 2, err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- recommend


@pytest.mark.parametrize("name", list(recommend.SCENARIOS))
def test_each_scenario_gives_the_chapters_method(capsys, name):
    code, out, err = cli(capsys, "recommend", "--scenario", name, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["method"] == recommend.SCENARIOS[name].method
    assert result["scenario"]["name"] == name and result["scenario"]["chapter_method"] == result["method"]


def test_custom_job_json_is_the_recommendation(capsys):
    args = ["--model", "llama-2-7b", "--memory-gb", "16", "--examples", "800", "--goal", "style",
            "--latency-sensitive"]
    code, out, err = cli(capsys, "recommend", *args, "--json")
    assert code == 0, err
    job = recommend.Job.parse({"model": "llama-2-7b", "memory_gb": "16", "examples": "800", "goal": "style",
                               "latency_sensitive": True})
    assert json.loads(out) == json.loads(json.dumps(recommend.recommend(job).as_json()))


def test_text_output_names_the_method_and_reasons(capsys):
    code, out, err = cli(capsys, "recommend", "--goal", "classify", "--model", "smollm2-1.7b")
    assert code == 0, err
    expected = recommend.recommend(recommend.Job.parse({"goal": "classify", "model": "smollm2-1.7b"}))
    assert f"recommended: {expected.method} ({expected.title})" in out
    assert f"  - {expected.reasons[0]}" in out and "runner-up:" in out

    code, out, err = cli(capsys, "recommend", "--list-scenarios")
    assert code == 0 and all(name in out for name in recommend.SCENARIOS)


@pytest.mark.parametrize("args, message", [
    (["--memory-gb", "nan"], "memory_gb must be a finite number"),
    (["--goal", "nonsense"], "goal must be one of style, knowledge"),
    (["--model", "no-such-model"], "Unknown model 'no-such-model'"),
    (["--scenario", "nope"], "There is no scenario 'nope'; the textbook section's scenarios are: support-bot-70b"),
    (["--scenario", "support-bot-70b", "--goal", "style"], "drop --goal"),
])
def test_recommend_bad_input_is_one_line(capsys, args, message):
    code, out, err = cli(capsys, "recommend", *args)
    assert_one_line_error(code, err, message)
    assert out == ""


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def lora_runs(two_step_loras):
    return two_step_loras


def test_compose_json_scores_a_b_and_combined(capsys, lora_runs):
    a, b = lora_runs
    code, out, err = cli(capsys, "compose", "--runs", f"{a},{b}", "--how", "cat", "--weights", "1,0.5",
                         "--examples", "2", "--max-new-tokens", "4", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["runs"] == [a, b] and result["how"] == "cat" and result["weights"] == [1.0, 0.5]
    assert set(result["scores"]) == {"A", "B", "combined"}
    for variant in ("A", "B", "combined"):
        assert set(result["scores"][variant]) == {"pirate", "french"}
    assert result["examples"] == {"pirate": 2, "french": 2} and result["max_new_tokens"] == 4
    assert set(result["interference"]) == {"pirate", "french"} and result["summary"]


def test_compose_text_shows_the_table(capsys, lora_runs):
    a, b = lora_runs
    code, out, err = cli(capsys, "compose", "--runs", f" {a} , {b} ", "--how", "cat", "--examples", "1",
                         "--max-new-tokens", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("LoRA composition (cat, weights 1 and 1)")
    assert "pirate" in lines[1] and "french" in lines[1]
    assert lines[2].startswith(f"A {a}") and lines[3].startswith(f"B {b}") and lines[4].startswith("combined")
    assert lines[5].startswith("interference (combined minus own adapter): pirate ")
    assert lines[6].startswith("Combining the two LoRA adapters (cat")


@pytest.mark.parametrize("args, message", [
    (["--runs", "{a}", "--how", "cat"], "--runs takes two run ids separated by a comma"),
    (["--runs", "{a},{b},{a}", "--how", "cat"], "--runs takes two run ids separated by a comma"),
    (["--runs", "{a},", "--how", "cat"], "--runs takes two run ids separated by a comma"),
    (["--runs", "{a},{b}", "--how", "cat", "--weights", "x,1"], "--weights takes two numbers"),
    (["--runs", "{a},{b}", "--how", "cat", "--weights", "1"], "--weights takes two numbers"),
    (["--runs", "{a},{b}", "--how", "cat", "--weights", "1,nan"], "weight of run B must be a finite number"),
    (["--runs", "{a},{b}", "--how", "concat"], "'concat' does not combine LoRA runs: choose linear, cat, ties"),
    (["--runs", "{a},20990101-000000-lora-abcdef", "--how", "cat"], "There is no run '20990101-000000-lora-abcdef'"),
    (["--runs", "{a},{b}", "--how", "cat", "--examples", "two"], "--examples must be a whole number"),
    (["--runs", "{a},{b}", "--how", "cat", "--examples", "0"], "examples must be between 1 and 64, got 0"),
    (["--runs", "{a},{b}"], "compose needs --runs A,B and --how"),
    (["--runs", "{a},{b}", "--how", "cat", "--steps", "3"], "--steps go with --demo-runs"),
    (["--demo-runs", "--runs", "{a},{b}"], "drop --runs"),
    (["--demo-runs", "--steps", "0"], "steps must be between 1 and 1000, got 0"),
    (["--demo-runs", "--kind", "ia3"], "--kind takes methods whose runs combine (lora, prompt, prefix), got 'ia3'"),
    (["--runs", "{a},{b}", "--how", "ties", "--density", "x"], "--density must be a number, got 'x'"),
    (["--runs", "{a},{b}", "--how", "ties", "--density", "2"], "density must be a number above 0 and at most 1"),
    (["--runs", "{a},{b}", "--kind", "prefix"], "--kind prefix, but run A (20"),
    (["--runs", "{a},{b}", "--kind", "lora,prefix"], "--kind names the one method both runs use"),
    (["--runs", "{a},{b}", "--how", "cat", "--target", "french"], "--target go with --learn-weights"),
    (["--learn-weights", "--runs", "{a},{b}"], "--learn-weights needs --runs A,B[,...]"),
    (["--learn-weights", "--runs", "{a},{b}", "--examples", "french", "--how", "cat"], "drop --how"),
    (["--learn-weights", "--runs", "{a}", "--examples", "french"], "needs at least two runs"),
    (["--learn-weights", "--runs", "{a},{b}", "--examples", "nowhere.jsonl", "--target", "french"],
     "No examples file 'nowhere.jsonl'"),
    (["--learn-weights", "--runs", "{a},{b}", "--examples", "french", "--shots", "x"], "--shots must be a whole number"),
])
def test_compose_bad_input_is_one_line(capsys, lora_runs, args, message):
    a, b = lora_runs
    code, out, err = cli(capsys, "compose", *[arg.format(a=a, b=b) for arg in args])
    assert_one_line_error(code, err, message)
    assert out == ""


def test_demo_runs_json_gives_four_run_ids(capsys, lora_runs, tmp_path, monkeypatch):
    """Finished LoRA runs with default options are reused (copied in to keep this quick); the prompt runs train."""
    shutil.copytree(runs.run_path(lora_runs[0]), tmp_path / "runs" / lora_runs[0])
    monkeypatch.setenv("EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    code, out, err = cli(capsys, "compose", "--demo-runs", "--kind", "lora,prompt", "--model", TINY, "--steps", "1",
                         "--json")
    assert code == 0, err
    found = json.loads(out)
    assert set(found) == {"lora-pirate", "lora-french", "prompt-pirate", "prompt-french"}
    assert len(set(found.values())) == 4
    for name, run_id in found.items():
        assert runs.status(runs.run_path(run_id))["state"] == "done"
        assert f"{name}: done {run_id}" in err or f"{name}: reused {run_id}" in err
    assert "prompt-french step 1/1: loss " in err

    code, out, err = cli(capsys, "compose", "--demo-runs", "--kind", "lora,prompt", "--model", TINY, "--steps", "1")
    assert code == 0 and all(run_id in out for run_id in found.values())
    assert err.count(": reused ") == 4


def test_compose_density_and_kind(capsys, lora_runs, cache):
    a, b = lora_runs
    code, out, err = cli(capsys, "compose", "--runs", f"{a},{b}", "--how", "magnitude_prune", "--density", "0.3",
                         "--examples", "1", "--max-new-tokens", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["combined"] == {"rank": 8, "ranks": [8, 8], "density": 0.3}
    p1 = train_run("prefix", "pirate", {"num_virtual_tokens": 2}, steps=1)
    p2 = train_run("prefix", "french", {"num_virtual_tokens": 3}, steps=1)
    code, out, err = cli(capsys, "compose", "--runs", f"{p1},{p2}", "--kind", "prefix", "--examples", "1",
                         "--max-new-tokens", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["how"] == "kv_concat" and result["combined"]["per_layer_keys"] == 5


def test_learn_weights_prints_progress_and_the_weights(capsys, lora_runs):
    a, b = lora_runs
    code, out, err = cli(capsys, "compose", "--learn-weights", "--runs", f"{a},{b}", "--examples", "french",
                         "--shots", "3", "--iterations", "2", "--max-new-tokens", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result["weights"]) == {a, b} and result["shots"] == 3 and result["target"] == "french"
    assert "iteration 1 (" in err and "best loss" in err
    assert len(result["history"]) == err.count("iteration ")
