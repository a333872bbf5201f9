"""Guard rails and what a run learned, end to end on the tiny model through `train --json`: a huge learning rate
really diverges and ends "diverged" (never "done"), a normal run does not and reports its three numbers and its
sentence; the page's progress line and metrics say so."""

import json

from conftest import TINY

from explorer.cli.main import main
from explorer.train import runs
from explorer.ui import run_view

LEARNED = ("similarity_base", "similarity_adapted", "fact_recall_base", "fact_recall_adapted", "probe_score_base",
           "probe_score_adapted")


def train_json(capsys, *sets: str, status: int = 0) -> dict:
    argv = ["train", "--model", TINY, "--method", "lora", "--dataset", "pirate", "--steps", "6", "--json",
            "--set", "batch_size=4", "--set", "seq_len=64", "--set", "eval_examples=3", "--set", "max_new_tokens=6",
            "--set", "eval_every=2"]
    for value in sets:
        argv += ["--set", value]
    assert main(argv) == status
    captured = capsys.readouterr()
    assert ("error: Diverged at step" in captured.err) == (status == 3), captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def test_a_huge_learning_rate_diverges_and_ends_diverged(cache, capsys):
    out = train_json(capsys, "learning_rate=10", status=3)  # printed, and never a silent success for a script
    assert out["diverged"] is True
    run = runs.read_run(runs.run_path(out["run_id"]))
    assert run.state == "diverged" and run.finished
    assert out["steps"] < 6, "a diverged run stops at once"
    assert run.summary["divergence"].endswith("with learning rate 10. Try a lower learning rate, such as 0.001.")
    assert out["verdict"].startswith(f"Training diverged at step {run.summary['divergence'].split()[3]}")
    events = runs.read_log(run.folder)
    assert [e["event"] for e in events].count("diverged") == 1
    line = run_view.progress_text(run, events, None)
    assert line.startswith("**Diverged**") and "learning rate 10" in line and "such as 0.001" in line


def test_a_normal_run_does_not_diverge_and_says_what_it_learned(cache, capsys):
    out = train_json(capsys)
    assert out["diverged"] is False
    run = runs.read_run(runs.run_path(out["run_id"]))
    assert run.state == "done"
    for key in LEARNED:
        assert 0.0 <= out[key] <= 1.0, key
    assert out["probe_score"] == out["probe_score_adapted"]  # the key the race reads
    assert run.summary["probe_questions"] == 10, "the forgetting probe is on by default"
    assert run.summary["facts_checked"] > 0  # the pirate answers name capitals
    assert out["fact_recall_base"] == run.summary["facts_recalled_base"] / run.summary["facts_checked"]
    assert out["verdict"] and "Training diverged" not in out["verdict"]
    assert f"of 10 general questions (the base: {run.summary['probe_right_base']})" in out["verdict"]
    text = run_view.metrics_text(runs.read_log(run.folder))
    assert text.startswith(f"**What it learned:** {out['verdict']}")
    assert "- process peak memory: measured " in text and "and the process's runtime baseline of " in text
    assert f"base {out['similarity_base']:.2f} → fine-tuned {out['similarity_adapted']:.2f}" in text
    assert f"base {run.summary['probe_right_base']} of 10 → fine-tuned {run.summary['probe_right_adapted']} of 10" \
        in text


def test_a_classifier_head_shares_the_rule(cache, capsys):
    argv = ["train", "--model", TINY, "--method", "head", "--dataset", "topics", "--steps", "6", "--json",
            "--set", "head_type=classifier", "--set", "lora_comparison=false", "--set", "eval_every=2"]
    assert main([*argv, "--set", "learning_rate=10"]) == 3
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["diverged"] is True and runs.read_run(runs.run_path(out["run_id"])).state == "diverged"
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["diverged"] is False and runs.read_run(runs.run_path(out["run_id"])).state == "done"


def test_a_run_that_diverged_on_its_first_step_says_so_on_the_page(tmp_path):
    """A loss that is nan at step 1 logs no step event: the line still names the step, the reason and the rates."""
    from conftest import force_status

    run_dir = tmp_path / "20260101-000000-lora-abcdef"
    run_dir.mkdir()
    message = ("Diverged at step 1: the training loss became nan with learning rate 10. Try a lower learning rate, "
               "such as 0.001.")
    runs.write_json(run_dir / "summary.json", {"steps": 0, "diverged": True, "divergence": message})
    force_status(run_dir, "diverged")
    events = [{"event": "start", "steps": 20}, {"event": "diverged", "step": 1, "message": message}]
    line = run_view.progress_text(runs.read_run(run_dir), events, None)
    assert line.startswith("**Diverged** `█░░░░░░░░░░░░░░░░░░░` step 1/20: the training loss became nan with "
                           "learning rate 10. Try a lower learning rate, such as 0.001.")
