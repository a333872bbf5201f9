"""Hosting settings: caps on what one user may ask for, the queue and concurrent workers, and the disk budget
(README: "Hosting for a class"). Which models may be named and the login: tests/test_hosting_access.py."""

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, force_status

from explorer import settings
from explorer.data import sources
from explorer.data import uploads as data
from explorer.errors import ExplorerError
from explorer.train import lifecycle, runs
from explorer.train import loop as training
from explorer.train.config import TrainConfig
from explorer.train.jobs import JobManager

# A stand-in worker (no torch, starts in a blink): "running" until the manager's STOP file appears.
FAKE_WORKER = """
import os, sys, time
from pathlib import Path
from explorer.train import lifecycle
run_dir = Path(sys.argv[1])
lifecycle.change(run_dir, "running", pid=os.getpid())
while not (run_dir / "STOP").exists():
    time.sleep(0.05)
lifecycle.change(run_dir, "stopped")
"""


@pytest.fixture
def own_runs(tmp_path, monkeypatch):
    """A runs folder of this test's own (settings are read at call time)."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("EXPLORER_RUNS_DIR", str(folder))
    return folder


def config(**overrides):
    values = dict(model=TINY, method="lora", dataset="pirate", steps=3, eval_examples=0, batch_size=2, seq_len=64)
    values.update(overrides)
    return TrainConfig(**values)


def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- settings themselves


def test_defaults_when_nothing_is_set(monkeypatch):
    for name in ("EXPLORER_MAX_STEPS", "EXPLORER_MAX_SEQ_LEN", "EXPLORER_MAX_BATCH", "EXPLORER_MAX_UPLOAD_MB",
                 "EXPLORER_MAX_UPLOAD_ROWS", "EXPLORER_MAX_QUEUE", "EXPLORER_MAX_CONCURRENT_JOBS", "EXPLORER_CONCURRENCY",
                 "EXPLORER_DISK_BUDGET_GB", "EXPLORER_DISK_POLICY", "EXPLORER_MODEL_SOURCES",
                 "EXPLORER_ALLOWED_MODEL_ROOT", "EXPLORER_AUTH", "EXPLORER_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert (settings.max_steps(), settings.max_seq_len(), settings.max_batch()) == (2000, 2048, 64)
    assert (settings.max_upload_bytes(), settings.max_upload_rows()) == (5_000_000, 20_000)
    assert (data.MAX_UPLOAD_BYTES, data.MAX_ROWS) == (5_000_000, 20_000)
    assert (settings.max_queue(), settings.max_concurrent_jobs(), settings.concurrency()) == (8, 1, 16)
    assert (settings.disk_budget_bytes(), settings.disk_policy()) == (0, "refuse")
    assert settings.model_sources() == "any" and settings.allowed_model_root() == settings.models_cache()
    assert settings.auth() is None
    settings.check_all()


@pytest.mark.parametrize("name, value, message", [
    ("EXPLORER_MAX_STEPS", "lots", "EXPLORER_MAX_STEPS must be a whole number"),
    ("EXPLORER_MAX_STEPS", "0", "EXPLORER_MAX_STEPS must be at least 1"),
    ("EXPLORER_MAX_SEQ_LEN", "4", "EXPLORER_MAX_SEQ_LEN must be at least 8"),
    ("EXPLORER_MAX_BATCH", "2.5", "EXPLORER_MAX_BATCH must be a whole number"),
    ("EXPLORER_MAX_UPLOAD_MB", "-1", "EXPLORER_MAX_UPLOAD_MB must be a positive number"),
    ("EXPLORER_MAX_UPLOAD_MB", "five", "EXPLORER_MAX_UPLOAD_MB must be a number of megabytes"),
    ("EXPLORER_MAX_UPLOAD_ROWS", "0", "EXPLORER_MAX_UPLOAD_ROWS must be at least 1"),
    ("EXPLORER_MAX_QUEUE", "x", "EXPLORER_MAX_QUEUE must be a whole number"),
    ("EXPLORER_MAX_CONCURRENT_JOBS", "0", "EXPLORER_MAX_CONCURRENT_JOBS must be at least 1"),
    ("EXPLORER_CONCURRENCY", "-2", "EXPLORER_CONCURRENCY must be at least 1"),
    ("EXPLORER_DISK_BUDGET_GB", "-5", "EXPLORER_DISK_BUDGET_GB must be a non-negative number"),
    ("EXPLORER_DISK_BUDGET_GB", "nan", "EXPLORER_DISK_BUDGET_GB must be a non-negative number"),
    ("EXPLORER_DISK_POLICY", "delete-everything", "EXPLORER_DISK_POLICY must be one of refuse, prune-oldest"),
    ("EXPLORER_MODEL_SOURCES", "internet", "EXPLORER_MODEL_SOURCES must be one of registry, local, hub"),
])
def test_invalid_values_stop_with_a_message_naming_the_setting(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        settings.check_all()


# --------------------------------------------------------------------------- caps in TrainConfig.parse


@pytest.mark.parametrize("field, variable, cap, value", [
    ("steps", "EXPLORER_MAX_STEPS", 200, 201),
    ("seq_len", "EXPLORER_MAX_SEQ_LEN", 256, 512),
    ("batch_size", "EXPLORER_MAX_BATCH", 8, 9),
])
def test_caps_are_enforced_with_a_message_naming_the_setting(monkeypatch, field, variable, cap, value):
    monkeypatch.setenv(variable, str(cap))
    base = {"model": TINY, "method": "lora", "dataset": "pirate"}
    with pytest.raises(ExplorerError, match=rf"^{field} must be at most {cap} on this server \({variable}\), "
                                            rf"got {value}\.$"):
        training.TrainConfig.parse({**base, field: str(value)})
    assert getattr(training.TrainConfig.parse({**base, field: cap}), field) == cap
    # A run saved before the cap was lowered still opens (Compare) and still trains (the worker).
    assert getattr(training.TrainConfig.parse({**base, field: value}, caps=False), field) == value


def test_default_caps_refuse_what_a_classroom_server_should_not_run(monkeypatch):
    for name in ("EXPLORER_MAX_STEPS", "EXPLORER_MAX_SEQ_LEN", "EXPLORER_MAX_BATCH"):
        monkeypatch.delenv(name, raising=False)
    base = {"model": TINY, "method": "lora", "dataset": "pirate"}
    for values in ({"steps": 2001}, {"seq_len": 4096}, {"batch_size": 65}):
        with pytest.raises(ExplorerError, match="on this server"):
            training.TrainConfig.parse({**base, **values})
    training.TrainConfig.parse({**base, "steps": 2000, "seq_len": 2048, "batch_size": 64})


def test_the_cli_goes_through_the_caps(monkeypatch, capsys, own_runs):
    from explorer.cli.main import main

    monkeypatch.setenv("EXPLORER_MAX_STEPS", "5")
    code = main(["train", "--model", TINY, "--method", "lora", "--dataset", "pirate", "--steps", "6"])
    err = capsys.readouterr().err
    assert code == 2 and "steps must be at most 5 on this server (EXPLORER_MAX_STEPS)" in err
    assert not own_runs.exists() or not any(own_runs.iterdir()), "nothing is created for a refused run"


# --------------------------------------------------------------------------- upload caps


def test_upload_caps_follow_the_settings(monkeypatch, tmp_path):
    line = b'{"prompt": "p", "response": "r"}'
    monkeypatch.setenv("EXPLORER_MAX_UPLOAD_MB", "0.001")  # 1,000 bytes
    assert data.MAX_UPLOAD_BYTES == 1000, "every caller reading data.MAX_UPLOAD_BYTES sees the setting"
    with pytest.raises(ExplorerError, match=r"big.jsonl is 1,001 bytes; the limit is 1,000 \(EXPLORER_MAX_UPLOAD_MB\)"):
        data.parse_upload(b" " * 1001, "big.jsonl")
    with pytest.raises(ExplorerError, match=r"the limit is 1,000 \(EXPLORER_MAX_UPLOAD_MB\)"):
        data.parse_pasted("x" * 1001)
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"\n".join([line] * 40))
    with pytest.raises(ExplorerError, match="larger than 1,000 bytes"):
        sources.load_dataset(str(big))

    monkeypatch.setenv("EXPLORER_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("EXPLORER_MAX_UPLOAD_ROWS", "3")
    assert data.MAX_ROWS == 3
    assert len(data.parse_upload(b"\n".join([line] * 3), "ok.jsonl").rows) == 3
    with pytest.raises(ExplorerError, match=r"Too many rows \(4\); the limit is 3 \(EXPLORER_MAX_UPLOAD_ROWS\)"):
        data.parse_upload(b"\n".join([line] * 4), "many.jsonl")
    with pytest.raises(ExplorerError, match="limit is 3"):
        data.parse_upload(b"prompt,response\n" + b"p,r\n" * 4, "many.csv")


# --------------------------------------------------------------------------- queue and concurrent workers


def fake_manager(**kwargs) -> JobManager:
    manager = JobManager(**kwargs)
    manager.worker_command = [sys.executable, "-c", FAKE_WORKER]
    return manager


def test_the_queue_size_comes_from_the_setting(monkeypatch, own_runs):
    monkeypatch.setenv("EXPLORER_MAX_QUEUE", "1")
    manager = fake_manager()
    assert manager.max_queue == 1 and manager.max_concurrent == 1
    first = manager.submit(config(), {})
    wait_until(lambda: runs.status(first).get("state") == "running", what="the first run to start")
    second = manager.submit(config(), {})
    assert manager.position(second) == 1
    with pytest.raises(ExplorerError, match=r"training queue is full \(1 runs waiting\)"):
        manager.submit(config(), {})
    manager.stop(first)
    wait_until(lambda: runs.status(second).get("state") == "running", what="the queue to move on")
    manager.stop(second)
    wait_until(lambda: not manager.busy(), what="the manager to be idle")
    assert [runs.status(r)["state"] for r in (first, second)] == ["stopped", "stopped"]


def test_concurrent_jobs_run_side_by_side_up_to_the_setting(monkeypatch, own_runs):
    monkeypatch.setenv("EXPLORER_MAX_CONCURRENT_JOBS", "2")
    manager = fake_manager()
    assert manager.max_concurrent == 2
    a, b, c = (manager.submit(config(), {}) for _ in range(3))
    wait_until(lambda: all(runs.status(r).get("state") == "running" for r in (a, b)), what="two workers at once")
    assert manager.position(a) == manager.position(b) == 0 and manager.position(c) == 1
    time.sleep(0.5)
    assert runs.status(c)["state"] == "queued", "never more than EXPLORER_MAX_CONCURRENT_JOBS workers"
    assert len(manager.running()) == 2
    manager.stop(b)
    wait_until(lambda: runs.status(c).get("state") == "running", what="the third run to take the free slot")
    assert set(manager.running()) == {a, c}
    manager.stop(a)
    manager.stop(c)
    wait_until(lambda: not manager.busy(), what="the manager to be idle")
    assert all(runs.status(r)["state"] == "stopped" for r in (a, b, c))


def test_a_worker_that_cannot_start_fails_its_run_and_the_queue_goes_on(own_runs):
    manager = fake_manager()
    manager.worker_command = ["/nonexistent/python"]
    doomed = manager.submit(config(), {})
    wait_until(lambda: runs.status(doomed).get("state") == "failed", what="the run to fail")
    assert "could not start" in runs.status(doomed)["error"]
    manager.worker_command = [sys.executable, "-c", FAKE_WORKER]
    following = manager.submit(config(), {})
    wait_until(lambda: runs.status(following).get("state") == "running", what="the next run to start")
    manager.stop(following)
    wait_until(lambda: not manager.busy(), what="the manager to be idle")


# --------------------------------------------------------------------------- disk budget


def finished_run(state: str, padding: int, age: int) -> Path:
    run_dir = lifecycle.create(config(), {})
    (run_dir / "padding.bin").write_bytes(b"\0" * padding)
    force_status(run_dir, state)
    stamp = time.time() - 1000 + age
    os.utime(run_dir / "settings.json", (stamp, stamp))
    return run_dir


def test_no_budget_means_no_limit(monkeypatch, own_runs):
    monkeypatch.delenv("EXPLORER_DISK_BUDGET_GB", raising=False)
    finished_run("done", 100_000, 0)
    lifecycle.create(config(), {})


def test_over_the_disk_budget_new_runs_are_refused(monkeypatch, own_runs):
    old = finished_run("done", 20_000, 0)
    monkeypatch.setenv("EXPLORER_DISK_BUDGET_GB", "0.00001")  # 10,000 bytes
    with pytest.raises(ExplorerError, match=r"over this server's disk budget .*EXPLORER_DISK_BUDGET_GB.*delete runs "
                                            r"in the Fine-tune tab"):
        lifecycle.create(config(), {})
    manager = fake_manager()
    with pytest.raises(ExplorerError, match="disk budget"):
        manager.submit(config(), {})
    assert [r.run_id for r in runs.list_runs()] == [old.name], "nothing was created, nothing deleted"
    shutil.rmtree(old)
    lifecycle.create(config(), {})  # back under budget


def test_prune_oldest_deletes_the_oldest_finished_runs_only(monkeypatch, own_runs):
    oldest_running = finished_run("running", 6_000, 0)
    oldest_queued = finished_run("queued", 6_000, 1)
    old_done = finished_run("done", 6_000, 2)
    old_failed = finished_run("failed", 6_000, 3)
    newer_done = finished_run("stopped", 6_000, 4)
    monkeypatch.setenv("EXPLORER_DISK_BUDGET_GB", "0.000025")  # 25,000 bytes: ~31,000 are used
    monkeypatch.setenv("EXPLORER_DISK_POLICY", "prune-oldest")
    assert runs.disk_usage_bytes() > 25_000
    new = lifecycle.create(config(), {})
    left = {r.run_id for r in runs.list_runs()}
    assert oldest_running.name in left and oldest_queued.name in left, "queued and running runs are never pruned"
    assert old_done.name not in left and old_failed.name not in left, "the oldest finished runs go first"
    assert newer_done.name in left and new.name in left, "only as many as needed to get under budget"
    assert runs.disk_usage_bytes() - runs.disk_usage_bytes(new) <= 25_000


def test_prune_oldest_refuses_when_only_unfinished_runs_are_left(monkeypatch, own_runs):
    running = finished_run("running", 30_000, 0)
    monkeypatch.setenv("EXPLORER_DISK_BUDGET_GB", "0.00001")
    monkeypatch.setenv("EXPLORER_DISK_POLICY", "prune-oldest")
    with pytest.raises(ExplorerError, match="even after deleting the oldest finished runs"):
        lifecycle.create(config(), {})
    assert running.is_dir()
