"""The Fine-tune tab's handlers without a browser, and in a browser: refused values, re-attaching to any run,
stop while preparing, uploads named and scored, the estimate before Start."""

import dataclasses
import json
import statistics

import pytest
from conftest import TINY, train_run, wait_for_text

from explorer.data import scores, uploads
from explorer.train import estimate, lifecycle, runs
from explorer.train.config import TrainConfig
from explorer.ui import compare_tab, finetune_tab, run_view

def form(options: dict | None = None, **train) -> dict:
    """What the tab's widgets would send, by name: LoRA on the tiny model, pirate, every other value its default."""
    lora = {finetune_tab.option_key("lora", k): v for k, v in (options or {}).items()}
    return finetune_tab.form_values(TINY, "lora", "pirate", **lora, **train)


@pytest.mark.parametrize("train, options, message", [
    ({"steps": 0}, None, "steps must be between 1 and 100000, got 0"),
    ({"steps": -1}, None, "steps must be between 1 and 100000, got -1"),
    ({"batch_size": 0}, None, "batch_size must be between 1 and 1024, got 0"),
    ({}, {"r": 0}, "r must be between 1 and 4096, got 0"),
    ({}, {"r": -4}, "r must be between 1 and 4096, got -4"),
])
def test_out_of_range_values_are_refused_and_nothing_starts(cache, train, options, message):
    before = set(runs.runs_dir().iterdir())
    run_id, text = finetune_tab.start_run(form(options, **train))
    assert run_id == "" and message in text and "Nothing was started" in text
    assert set(runs.runs_dir().iterdir()) == before


def test_the_estimate_before_start_gives_memory_and_time_from_measured_runs(cache):
    config = TrainConfig(model=TINY, method="lora", dataset="pirate", steps=40, batch_size=4, seq_len=64)
    train_run("lora", steps=3, batch_size=4, seq_len=64)  # one measured run of this model on this machine
    guess = estimate.estimate(config, {})
    assert guess.memory_bytes > 0 and guess.train_seconds > 0 and "measured by" in guess.basis
    longer = estimate.estimate(dataclasses.replace(config, steps=80), {})
    assert longer.train_seconds == pytest.approx(2 * guess.train_seconds), "time grows with the steps"
    mean = estimate.mean_tokens(TINY, "pirate", 64)
    assert 10 < mean < 64, "pirate rows are shorter than 64 tokens: the estimate counts their real length"
    padded = estimate.estimate(config, {}, tokens_per_example=64)
    assert guess.train_seconds == pytest.approx(padded.train_seconds * mean / 64)
    assert estimate.mean_tokens(TINY, "topics", 64) is None, "labelled data: no chat encoding to measure"
    text = finetune_tab.preview_cost(form())
    assert text.startswith("**Before you start:** the Calculator predicts") and " s of training steps" in text


def test_an_upload_is_named_by_its_file_and_scored_as_chosen(cache, tmp_path):
    rows = "\n".join(json.dumps({"prompt": f"Say yes {i}", "response": "yes"}) for i in range(12))
    parsed = uploads.parse_upload(rows.encode(), "My answers.jsonl")
    path = uploads.keep_for_training(parsed, tmp_path / "uploads")
    assert path.name == "My-answers.jsonl" and runs.dataset_label(str(path)) == "My-answers"
    run_id = train_run("lora", dataset=str(path), steps=2, eval_examples=2, max_new_tokens=3, score="contains")
    run = runs.read_run(runs.run_path(run_id))
    assert run.dataset_label == "My-answers" and run.config.score == "contains"
    assert isinstance(run.summary["task_score_base"], float), "an upload with a chosen score has a task score"
    row = run_view.runs_table().set_index("run").loc[run_id]
    assert row["dataset"] == "My-answers" and "→" in row["task score base → adapted"]


def test_scores_for_uploaded_data():
    assert scores.exact("Paris.", "paris") == 1.0 and scores.exact("Paris, France", "Paris") == 0.0
    assert scores.contains("It is Paris, France", "paris") == 1.0
    assert scores.token_f1("the cat sat", "the cat") == pytest.approx(0.8)
    regex = scores.task_for("/some/upload.jsonl", r"regex:\barr\b")
    assert regex.score(["Arr matey", "hello"], ["", ""]) == 0.5
    assert scores.task_for("pirate", "exact").name == "pirate", "a bundled task keeps its own score"
    assert scores.task_for("/some/upload.jsonl", "") is None
    for bad, message in [("regex:(a+)+$", "repeats a group"), ("regex:(", "does not compile"),
                         ("regex:", "needs a pattern"), ("fuzzy", "score must be exact")]:
        with pytest.raises(Exception, match=message):
            scores.check(bad)


def test_a_stop_while_the_run_prepares_ends_it_before_the_first_step(cache):
    """The trainer checks for a stop once the model is loaded and between the base model's scoring batches,
    not only between steps: a stop asked while it prepares ends the run with nothing trained or saved."""
    run_dir = lifecycle.create(TrainConfig(model=TINY, method="lora", dataset="pirate", steps=50, batch_size=2,
                                           seq_len=64), {})
    lifecycle.request_stop(run_dir)  # asked before the trainer got past loading the model
    outcome = lifecycle.execute(run_dir)
    assert outcome.state == "stopped" and outcome.summary["steps"] == 0
    run = runs.read_run(run_dir)
    assert not run.has_adapter and run.summary["train_loss_last"] is None
    assert "before the first step" in run_view.progress_text(run, runs.read_log(run_dir), None)
    assert run_dir.name not in [value for _, value in compare_tab.run_choices()], "nothing to compare"
    assert run_view.table_row(run)[6:9] == ["", "", ""], "no 0.00 → 0.00 for a run that never trained"


def test_stop_and_discard_act_on_the_selected_run_and_say_so(cache):
    assert "No run to stop yet" in finetune_tab.stop_run("")
    run_id = train_run("lora", steps=1)
    assert "nothing to stop" in finetune_tab.stop_run(run_id)
    cleared, message, table = finetune_tab.discard_run(run_id)
    assert cleared == "" and "discarded" in message and run_id not in list(table["run"])


def test_browser_clicking_a_run_reattaches_its_live_view(app_url, page, screenshot):
    run_id = train_run("lora", steps=2, eval_every=1)
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#ft-compare").click()
    wait_for_text(page, "#ft-progress", "No run selected")
    wait_for_text(page, "#ft-runs", run_id, timeout=30_000)
    page.locator("#ft-runs span").get_by_text(run_id).first.click()
    wait_for_text(page, "#ft-progress", f"(run `{run_id}`)".replace("`", ""), timeout=30_000)
    assert "Finished" in page.locator("#ft-progress").inner_text()
    wait_for_text(page, "#ft-metrics", "held-out loss:")
    assert page.locator("#ft-plot .js-plotly-plot").count() == 1
    page.locator("#ft-discard").click()
    wait_for_text(page, "#ft-progress", "discarded")
    screenshot("finetune_reattach")


def test_a_stop_during_generation_ends_it_after_one_token(cache):
    from explorer import evaluate
    from explorer.data import sources
    from explorer.data.tasks import TASKS
    from explorer.models import loading

    loaded = loading.load_fresh(TINY, precision="fp32")
    _, rows = sources.load_dataset("pirate")
    asked = []

    def stop_after_three_checks():
        asked.append(1)
        return len(asked) > 3

    score = evaluate.task_score(loaded.model, loaded.tokenizer, rows[:16], TASKS["pirate"], 32, loaded.device,
                                should_stop=stop_after_three_checks)
    assert score is None and len(asked) < 10, "checked once per token, and generation ended at the stop"


def test_the_estimate_prefers_the_methods_own_speed_and_counts_the_questions_and_the_watch(cache):
    """Speed from runs of the same method when there are any; the time outside the steps from runs that asked the
    same questions; the watch's snapshots as their planned number times a snapshot's measured time."""
    lora = train_run("lora", steps=2, batch_size=2, seq_len=64, watch_every=1, eval_examples=2)
    config = TrainConfig(model=TINY, method="lora", dataset="pirate", steps=4, batch_size=2, seq_len=64,
                         watch_every=1, eval_examples=2)
    guess = estimate.estimate(config, {})
    assert "LoRA run(s) of tiny-random-llama" in guess.basis
    mine = next(m for m in estimate._measured(TINY) if m.questions == estimate.questions_asked(config))
    snapshot = [e["seconds"] for e in runs.read_log(runs.run_path(lora)) if e.get("event") == "replies"]
    assert len(snapshot) == 3 and mine.snapshot == pytest.approx(sorted(snapshot)[1])
    unwatched = estimate.estimate(dataclasses.replace(config, watch_every=0), {})
    per_snapshot = statistics.median(m.snapshot for m in estimate._measured(TINY) if m.snapshot is not None)
    assert guess.other_seconds - unwatched.other_seconds == pytest.approx(5 * per_snapshot), "0, 1, 2, 3, 4"
    other = estimate.estimate(dataclasses.replace(config, method="ia3"), {})
    ia3_runs = [m for m in estimate._measured(TINY) if m.method == "ia3"]  # other tests may have trained some
    assert ("newest finished IA³ run(s)" if ia3_runs else "none of IA³ yet") in other.basis
