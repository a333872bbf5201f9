"""Training in a worker process: the server survives crashes and kills, the queue moves on,
and the Fine-tune tab works in a browser."""

import json
import os
import signal
import time

import pytest
from conftest import TINY, force_status, wait_for_text

from explorer import settings
from explorer.train import lifecycle, runs
from explorer.train.config import TrainConfig
from explorer.train.jobs import JobManager


def wait_state(run_dir, states, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = runs.status(run_dir).get("state")
        if state in states:
            return state
        time.sleep(0.3)
    raise AssertionError(f"run stayed {runs.status(run_dir)} instead of {states}")


def tiny_config(**overrides):
    values = dict(model=TINY, method="lora", dataset="pirate", steps=3, eval_examples=0, batch_size=2, seq_len=64)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def manager(cache):
    return JobManager()


def test_worker_killed_mid_run_is_reported_and_the_queue_moves_on(manager):
    doomed = manager.submit(tiny_config(steps=10_000), {})
    following = manager.submit(tiny_config(), {})
    assert manager.position(following) in (1, 2)  # behind the doomed run, whether it started yet or not
    wait_state(doomed, {"running"})
    while not any(e.get("event") == "step" for e in runs.read_log(doomed)):
        time.sleep(0.2)
    start = next(e for e in runs.read_log(doomed) if e.get("event") == "start")
    # the defaults: the web server keeps a core; the worker trains at the server's priority on the others
    assert start["cpu_threads"] == max(1, settings.cores() - 1) == settings.worker_threads()
    assert settings.worker_nice() == 0 and start["niceness"] == os.nice(0)
    os.kill(runs.status(doomed)["pid"], signal.SIGKILL)
    assert wait_state(doomed, {"failed"}) == "failed"
    assert "signal 9" in runs.status(doomed)["error"]
    assert wait_state(following, {"done"}) == "done"
    assert not (doomed / "adapter").exists(), "a killed run leaves no adapter that would load"


def test_a_crashing_run_reports_its_error(manager, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")  # one row: nothing to hold out
    run_dir = manager.submit(tiny_config(dataset=str(bad)), {})
    assert wait_state(run_dir, {"failed"}) == "failed"
    assert "at least 2 valid rows" in runs.status(run_dir)["error"]


def test_stop_keeps_what_was_trained(manager, monkeypatch):
    monkeypatch.setenv("EXPLORER_WORKER_THREADS", "3")  # the worker process reads the server's settings
    monkeypatch.setenv("EXPLORER_WORKER_NICE", "4")
    run_dir = manager.submit(tiny_config(steps=10_000), {})
    wait_state(run_dir, {"running"})
    while not any(e.get("event") == "step" for e in runs.read_log(run_dir)):
        time.sleep(0.2)
    start = next(e for e in runs.read_log(run_dir) if e.get("event") == "start")
    assert (start["cpu_threads"], start["niceness"]) == (3, min(19, os.nice(0) + 4))
    manager.stop(run_dir)
    assert wait_state(run_dir, {"stopped"}) == "stopped"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("name,value,message", [
    ("EXPLORER_WORKER_THREADS", "0", "at least 1"), ("EXPLORER_WORKER_THREADS", "two", "whole number"),
    ("EXPLORER_WORKER_NICE", "20", "between 0 and 19"), ("EXPLORER_WORKER_NICE", "-5", "at least 0")])
def test_bad_worker_settings_stop_the_app_with_their_message(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=f"{name} must be .*{message}"):
        settings.check_all()


def test_restart_marks_unfinished_runs_interrupted(cache):
    run_dir = lifecycle.create(tiny_config(), {})
    force_status(run_dir, "running", pid=999999)
    JobManager()  # a new server
    assert runs.status(run_dir)["state"] == "interrupted"


def test_browser_short_run_shows_the_loss_curve_and_the_run(app_url, page, screenshot):
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("combobox", name="Model").first.click()
    page.get_by_role("option", name=TINY).click()
    page.locator("#ft-steps input").fill("4")
    page.get_by_text("Advanced: every method option and training setting").click()
    page.locator("#ft-eval_examples input").fill("2")
    page.locator("#ft-start").click()
    wait_for_text(page, "#ft-progress", "Finished", timeout=240_000)
    assert page.locator("#ft-plot .js-plotly-plot").count() == 1
    assert "trainable parameters: measured" in page.locator("#ft-metrics").inner_text()
    wait_for_text(page, "#ft-runs", TINY, timeout=30_000)
    screenshot("finetune_tab")
    run_id = page.locator("#ft-progress").inner_text().split("run ")[-1].strip(" `()")
    page.locator("#ft-compare").click()  # the run just trained opens in the Compare tab
    page.wait_for_function("(id) => { const e = document.querySelector('#compare-run input'); return !!e && e.value.includes(id); }", arg=run_id,
                           timeout=30_000)
    page.locator("#compare-prompts textarea").fill("Ahoy")
    page.locator("#compare-go").click()
    wait_for_text(page, "#compare-output", "Merged (adapter folded into the weights)", timeout=120_000)
