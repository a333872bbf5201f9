"""The Ray backend's transport without Ray: a job's folders packed for a node, unpacked there, and every change
the node makes carried back into the server's folders (explorer.train.backends.sync); the backend settings."""

import json
import os
import re
from pathlib import Path

import pytest

from explorer import settings
from explorer.errors import ExplorerError
from explorer.train import lifecycle, runs
from explorer.train.backends import Job, ray_backend, sync
from explorer.train.config import TrainConfig

from conftest import TINY


def queued_run(dataset: str = "pirate") -> Path:
    return lifecycle.create(TrainConfig(model=TINY, method="lora", dataset=dataset, steps=3), {"r": 4})


def round_trip(job_folders, tmp_path, node_work):
    """Pack on the 'server', unpack on the 'node', let ``node_work(layout)`` change the node's folders, and
    apply what the watcher sends back; returns (messages, statuses recorded)."""
    layout = sync.unpack(sync.pack(job_folders), tmp_path / "node")
    watcher = sync.Watcher(layout)
    node_work(layout)
    messages = list(watcher.poll())
    statuses = []
    receiver = sync.Receiver(job_folders, lambda folder, status: statuses.append((folder, status)))
    for message in messages:
        receiver.apply(message)
    return messages, statuses, layout


def test_a_run_goes_to_the_node_and_its_results_come_back_in_a_safe_order(tmp_path, monkeypatch):
    monkeypatch.setattr(sync, "CHUNK_BYTES", 1000)  # the adapter comes back in several chunks
    upload = tmp_path / "uploads" / "rows.jsonl"
    upload.parent.mkdir()
    upload.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}\n' * 3)
    server = queued_run(dataset=str(upload))
    weights = os.urandom(4500)

    def train_on_node(layout):
        node = layout.folders[str(server)]
        saved = json.loads((node / "settings.json").read_text())
        assert saved["config"]["dataset"] != str(upload), "the node reads its own copy of the dataset"
        assert Path(saved["config"]["dataset"]).read_bytes() == upload.read_bytes()
        (node / runs.ADAPTER_DIR).mkdir()
        (node / runs.ADAPTER_DIR / "adapter_model.safetensors").write_bytes(weights)
        (node / runs.ADAPTER_DIR / "adapter_config.json").write_text("{}")
        runs.write_json(node / "summary.json", {"run_dir": str(node), "dataset": saved["config"]["dataset"]})
        runs.append_log(node, {"event": "step", "step": 1})
        with (node / "log.jsonl").open("a") as handle:
            handle.write('{"event": "st')  # a line being written: not sent yet
        lifecycle.change(node, "running", pid=123)
        (node / ".tmp-half").write_text("never sent")

    messages, statuses, _ = round_trip([server], tmp_path, train_on_node)
    kinds = [m[0] for m in messages]
    assert kinds == ["chunk"] * 6 + ["folder", "file", "append", "status"], kinds  # adapter, summary, log, status
    assert (server / runs.ADAPTER_DIR / "adapter_model.safetensors").read_bytes() == weights
    assert json.loads((server / runs.ADAPTER_DIR / "adapter_config.json").read_text()) == {}
    assert runs.read_json(server / "summary.json") == {"run_dir": str(server), "dataset": str(upload)}
    assert [e["event"] for e in runs.read_log(server)] == ["step"]
    assert statuses == [(server, {**statuses[0][1], "state": "running", "pid": 123})]
    assert not [p for p in server.iterdir() if p.name.startswith(runs.TMP_PREFIX)]


def test_a_race_folder_travels_with_its_runs_and_the_command_is_translated(tmp_path):
    race = settings.races_dir() / "20990101-000000-race-abcdef"
    race.mkdir(parents=True)
    runs.write_json(race / "race.json", {"settings": {"dataset": "pirate"}, "entrants": []})
    entrant = queued_run()
    layout = sync.unpack(sync.pack(Job([entrant], ["python", "-m", "x", str(race)], log_dir=race).folders),
                         tmp_path / "node")
    assert layout.folders[str(race)] == tmp_path / "node" / "races" / race.name
    assert layout.folders[str(entrant)] == tmp_path / "node" / "runs" / entrant.name
    assert layout.argument(str(race)) == str(layout.folders[str(race)])
    assert layout.env() == {"EXPLORER_RUNS_DIR": str(tmp_path / "node" / "runs"),
                            "EXPLORER_RACES_DIR": str(tmp_path / "node" / "races")}
    assert runs.read_json(layout.folders[str(race)] / "race.json")["settings"]["dataset"] == "pirate"


def test_a_short_relative_dataset_name_is_never_replaced_inside_other_text():
    layout = sync.Layout(Path("/node"), {}, {"a.jsonl": "/node/data/0/a.jsonl"})
    text = json.dumps({"dataset": "a.jsonl", "note": "see a.jsonl"})
    assert json.loads(layout.to_node(text)) == {"dataset": "/node/data/0/a.jsonl", "note": "see a.jsonl"}


def test_a_cancelled_run_takes_no_files_and_bad_names_are_refused(tmp_path):
    server = queued_run()
    lifecycle.cancel(server)
    receiver = sync.Receiver([server], lambda *a: None,
                             accepts=lambda folder: runs.status(folder).get("state") != "cancelled")
    receiver.apply(("file", str(server), "summary.json", b"{}"))
    assert not (server / "summary.json").exists()
    open_receiver = sync.Receiver([server], lambda *a: None)
    for bad in (("file", str(server), "../evil.json", b"{}"), ("chunk", str(server), "adapter", "../x", 0, b""),
                ("chunk", str(server), "adapter", "/etc/x", 0, b""), ("file", str(server), ".tmp-x", b"")):
        with pytest.raises(ValueError):
            open_receiver.apply(bad)
    assert not (server.parent / "evil.json").exists()


def test_a_transfer_cut_short_leaves_no_folder_that_loads(tmp_path):
    server = queued_run()
    receiver = sync.Receiver([server], lambda *a: None)
    receiver.apply(("chunk", str(server), "adapter", "adapter_model.safetensors", 0, b"half"))
    receiver.discard()  # the node died before the folder was whole
    assert not (server / runs.ADAPTER_DIR).exists()
    assert not [p for p in server.iterdir() if p.name.startswith(runs.TMP_PREFIX)]


def test_backend_settings_are_checked(monkeypatch):
    monkeypatch.setenv("EXPLORER_JOB_BACKEND", "slurm")
    with pytest.raises(SystemExit, match="EXPLORER_JOB_BACKEND must be one of local, ray"):
        settings.check_all()
    monkeypatch.setenv("EXPLORER_JOB_BACKEND", "ray")
    for bad in ("10.0.0.5", "ray://10.0.0.5:10001", "host:99999", ":6379"):
        monkeypatch.setenv("EXPLORER_RAY_ADDRESS", bad)
        with pytest.raises(SystemExit, match="EXPLORER_RAY_ADDRESS must be HOST:PORT"):
            settings.check_all()
    monkeypatch.setenv("EXPLORER_RAY_ADDRESS", "10.0.0.5:6379")
    assert settings.ray_address() == "10.0.0.5:6379"
    assert settings.max_concurrent_jobs() == settings.UNCAPPED  # the cluster's capacity decides
    monkeypatch.setenv("EXPLORER_MAX_CONCURRENT_JOBS", "3")
    assert settings.max_concurrent_jobs() == 3                  # the hosting cap still holds
    monkeypatch.delenv("EXPLORER_JOB_BACKEND")
    monkeypatch.delenv("EXPLORER_MAX_CONCURRENT_JOBS")
    assert settings.max_concurrent_jobs() == 1


@pytest.mark.parametrize("answers, message", [
    (False, "uses token authentication; no token was found here: set RAY_AUTH_TOKEN"),
    (None, "gave no answer (check the address), and PEFT Explorer uses Ray only with token authentication; no "
           "token was found here: set RAY_AUTH_TOKEN"),
])
def test_a_remote_cluster_without_a_token_is_refused_before_connecting(monkeypatch, tmp_path, answers, message):
    """What the cluster answered a caller without a token (tests/test_ray_backend.py asks real heads) picks the
    message."""
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(ray_backend, "answers_without_token", lambda address: answers)
    with pytest.raises(ExplorerError, match=re.escape(f"The Ray cluster at 10.0.0.5:6379 {message}")):
        ray_backend.prepare_environment("10.0.0.5:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ, "a remote cluster is reached on its own address"
    ray_backend.prepare_environment(None)  # its own Ray: a fresh token, every socket on 127.0.0.1
    assert len(os.environ["RAY_AUTH_TOKEN"]) == 64 and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_a_cluster_without_token_authentication_is_refused_with_how_to_turn_it_on(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 64)  # a token does not make such a cluster check it
    monkeypatch.setattr(ray_backend, "answers_without_token", lambda address: True)
    with pytest.raises(ExplorerError) as refused:
        ray_backend.prepare_environment("10.0.0.5:6379")
    text = str(refused.value)
    assert text.startswith("The Ray cluster at 10.0.0.5:6379 runs without token authentication, and PEFT Explorer "
                           "requires it")
    assert "`RAY_AUTH_MODE=token ray start --head ...`" in text and "ray get-auth-token --generate" in text
    assert "needs its authentication token" not in text and len(text.splitlines()) == 1


def test_a_stop_posted_on_the_server_reaches_the_waiting_node_at_once():
    import asyncio
    import concurrent.futures

    from explorer.train.backends.ray_node import Signals

    async def scenario():
        board = Signals()  # the Ray actor's class, driven here by one event loop as Ray drives it
        waiting = asyncio.create_task(board.take("job", 30))
        await asyncio.sleep(0)
        await board.post("job", "stop", "/runs/a")
        got = await asyncio.wait_for(waiting, 10)  # answered by the post, not by the 30 s wait running out
        await board.post("other", "cancel", "/runs/b")
        return got, await board.take("job"), await board.take("other")

    # A thread of its own: an earlier test in this worker (a browser test's sync API) may leave this thread's
    # event loop running, and asyncio.run refuses to start inside one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        got = pool.submit(asyncio.run, scenario()).result()
    assert got == ([("stop", "/runs/a")], [], [("cancel", "/runs/b")])


def test_the_page_says_where_a_run_waits_or_trains():
    from explorer.ui import run_view

    run_dir = queued_run()
    assert run_view.where_text(runs.read_run(run_dir), 3) == "queue #3"
    assert run_view.where_text(runs.read_run(run_dir), 0) == "starting"
    lifecycle.change(run_dir, "running", pid=os.getpid(), backend="ray", node="10.0.0.7", device="NVIDIA H200",
                     worker_pid=1, job_pid=2)
    run = runs.read_run(run_dir)
    assert run_view.where_text(run) == "Ray 10.0.0.7 · NVIDIA H200"
    assert run_view.table_row(run)[-1] == "Ray 10.0.0.7 · NVIDIA H200"
    assert run_view.progress_text(run, [], 0).endswith(f"run `{run.run_id}` on Ray 10.0.0.7 · NVIDIA H200: loading "
                                                       "the model, scoring the base model on held-out examples…")
    local = queued_run()
    lifecycle.change(local, "running", pid=os.getpid())
    assert run_view.where_text(runs.read_run(local)) == "this server"


def test_a_node_removes_job_folders_whose_ray_worker_was_killed(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    from explorer.train.backends import ray_node

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale, alive = tmp_path / f"{ray_node.JOB_PREFIX}a", tmp_path / f"{ray_node.JOB_PREFIX}b"
    for folder, pid in ((stale, gone.pid), (alive, os.getpid())):
        folder.mkdir()
        (folder / ray_node.OWNER_FILE).write_text(str(pid))
    ray_node._remove_stale_folders()
    assert not stale.exists() and alive.exists()
