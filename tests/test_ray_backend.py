"""Jobs on a real Ray cluster: a head started here on 127.0.0.1 with 2 CPUs and token authentication, stopped by
its own process id (never `ray stop`, which stops every Ray on the machine). Two jobs run at once, a stop
lands, a killed Ray worker fails only its run, a run's files come back as a local worker leaves them, a race
and the command line go through Ray too, and the app's own Ray stays on 127.0.0.1 with its token."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from explorer import settings
from explorer.train import runs
from explorer.train.config import TrainConfig
from explorer.train.jobs import JobManager

from conftest import TINY, free_port, train_run

pytestmark = pytest.mark.timeout(600)
HEAD_START_SECONDS = 120  # ~3 s on a quiet machine; far more on a shared 2-core one


def ray_env(port: int, token: str) -> dict:
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",   # every Ray socket on 127.0.0.1
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "EXPLORER_JOB_BACKEND": "ray", "EXPLORER_RAY_ADDRESS": f"127.0.0.1:{port}"}


@pytest.fixture(scope="module")
def ray_cluster(cache):
    """One head for the module (each start costs seconds); the environment a server on Ray would have, set
    before ray is imported in this process (Ray reads its token mode when it loads)."""
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
    port, token = free_port(), secrets.token_hex(32)
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, **ray_env(port, token), "PYTHONPATH": str(settings.REPO_ROOT)}
    log = (folder / "head.log").open("wb")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", "--object-store-memory=100000000",
                             f"--temp-dir={folder / 'ray'}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=settings.REPO_ROOT)
    patch = pytest.MonkeyPatch()
    try:
        deadline = time.time() + HEAD_START_SECONDS
        while b"Ray runtime started." not in (folder / "head.log").read_bytes():
            assert head.poll() is None and time.time() < deadline, (folder / "head.log").read_text()[-2000:]
            time.sleep(0.5)
        for name, value in ray_env(port, token).items():
            patch.setenv(name, value)
        from explorer.train import backends

        backend = backends.current()
        backend.check()
        yield backend
    finally:
        patch.undo()
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        head.terminate()  # --block: this one process stops the whole head
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def tiny(**overrides) -> TrainConfig:
    values = dict(model=TINY, method="lora", dataset="pirate", steps=3, batch_size=2, seq_len=64, eval_examples=0,
                  eval_every=100_000)
    return TrainConfig(**{**values, **overrides})


def steps_of(run_dir: Path) -> int:
    return sum(1 for event in runs.read_log(run_dir) if event.get("event") == "step")


def wait_until(check, seconds: float = 300, what: str = "") -> None:
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, f"gave up waiting for {what}"
        time.sleep(0.3)


def loads_in_plain_peft(adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(settings.models_cache() / TINY)
    return PeftModel.from_pretrained(base, adapter)


def test_two_jobs_run_at_once_a_stop_lands_and_a_killed_worker_fails_only_its_run(ray_cluster):
    manager = JobManager(backend=ray_cluster)
    assert manager.slots() == 2, "2 CPUs, 1 per job: two jobs at once"
    stopped = manager.submit(tiny(steps=100_000, seed=11), {})
    killed = manager.submit(tiny(steps=100_000, seed=12), {})
    wait_until(lambda: steps_of(stopped) >= 2 and steps_of(killed) >= 2, what="both jobs training")
    both = [runs.status(run) for run in (stopped, killed)]
    assert [s["state"] for s in both] == ["running", "running"], "neither can finish before it is stopped"
    for status in both:
        assert (status["backend"], status["node"], status["device"]) == ("ray", "127.0.0.1", "CPU ×1")
    assert both[0]["worker_pid"] != both[1]["worker_pid"]

    manager.stop(stopped)
    os.kill(both[1]["worker_pid"], signal.SIGKILL)
    wait_until(lambda: not manager.busy(), what="both jobs to end")

    run = runs.read_run(stopped)
    assert run.state == "stopped" and run.has_adapter
    assert 2 <= run.summary["steps"] < 100_000 and run.summary["stopped"] is True
    assert run.summary["run_dir"] == str(stopped), "paths in the summary name the server's folder"
    loads_in_plain_peft(stopped / runs.ADAPTER_DIR)

    lost = runs.read_run(killed)
    assert lost.state == "failed" and not lost.has_adapter
    assert "Ray worker process running this job on node 127.0.0.1 died" in lost.error
    assert runs.read_log(killed)[-1]["message"] == lost.error
    for _ in range(600):  # the process may still be exiting when Ray reports its worker dead: a wait, not a limit
        if not runs.alive(both[1]["job_pid"]):
            break
        time.sleep(0.1)
    assert not runs.alive(both[1]["job_pid"]), "the training process on the node died with its Ray worker"
    assert not [p for p in killed.iterdir() if p.name.startswith(runs.TMP_PREFIX)]


def test_a_run_on_ray_leaves_the_files_a_local_worker_leaves(ray_cluster):
    manager = JobManager(backend=ray_cluster)
    on_ray = manager.submit(tiny(seed=21), {"r": 4})  # the queue goes on after the previous test's killed job
    local = runs.run_path(train_run("lora", options={"r": 4}, seed=21, batch_size=2))
    wait_until(lambda: not manager.busy(), what="the Ray job")
    remote = runs.read_run(on_ray)
    assert remote.state == "done", remote.error
    names = lambda folder: sorted(p.name for p in folder.iterdir() if p.name != "worker.err")  # noqa: E731
    assert names(on_ray) == names(local)
    assert names(on_ray / runs.ADAPTER_DIR) == names(local / runs.ADAPTER_DIR)
    assert sorted(remote.summary) == sorted(runs.read_run(local).summary)
    assert remote.summary["run_dir"] == str(on_ray) and remote.summary["steps"] == 3
    kinds = lambda folder: [e["event"] for e in runs.read_log(folder)]  # noqa: E731
    assert kinds(on_ray) == kinds(local)
    model = loads_in_plain_peft(on_ray / runs.ADAPTER_DIR)
    trained = {k: v.shape for k, v in model.state_dict().items() if "lora_" in k}
    reference = {k: v.shape for k, v in loads_in_plain_peft(local / runs.ADAPTER_DIR).state_dict().items()
                 if "lora_" in k}
    assert trained == reference and len(trained) > 0


def test_a_race_runs_as_one_ray_job_and_its_results_come_back(ray_cluster):
    from explorer.race.races import RaceSettings, create_race, read_race

    manager = JobManager(backend=ray_cluster)  # first, as the server's: a new manager marks queued runs interrupted
    race = create_race(RaceSettings(model=TINY, dataset="pirate", steps=2, batch_size=2, seq_len=64, eval_every=2,
                                    eval_examples=2, probe_examples=2, max_new_tokens=4, seed=31), "lora:r=2,ia3")
    manager.submit_job(race.run_folders(), [sys.executable, "-m", "explorer.race.worker", str(race.folder)],
                       name=race.race_id, log_dir=race.folder)
    wait_until(lambda: not manager.busy(), what="the race")
    done = read_race(race.race_id)
    assert done.states() == ["done", "done"]
    assert set(done.base) >= {"heldout_loss", "task_score", "probe_score"}, "base.json came back from the node"
    assert all((folder / runs.ADAPTER_DIR).is_dir() for folder in done.run_folders())


def test_the_command_line_trains_on_ray_and_says_where(ray_cluster, capsys):
    from explorer.cli.main import main

    code = main(["train", "--model", TINY, "--method", "lora", "--dataset", "pirate", "--steps", "2",
                 "--set", "seq_len=64", "--set", "eval_examples=0", "--set", "seed=41", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert (out["backend"], out["node"], out["steps"]) == ("ray", "127.0.0.1", 2)
    assert "submitted to Ray (127.0.0.1:" in captured.err and "step 2/2" in captured.err
    assert runs.read_run(Path(out["run_dir"])).has_adapter


OWN_RAY = """
import json, os, sys
from explorer.train.backends.ray_backend import RayBackend
backend = RayBackend(None)
backend.check()
import psutil, ray
from ray._raylet import AuthenticationMode, get_authentication_mode
listening = {c.laddr.ip for p in psutil.Process().children(recursive=True) for c in p.net_connections("inet")
             if c.status == psutil.CONN_LISTEN}
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "listening": sorted(listening),
                  "token": get_authentication_mode() == AuthenticationMode.TOKEN, "slots": backend.slots()}))
ray.shutdown()
"""


def test_a_cluster_without_token_authentication_is_found_and_refused(ray_cluster, tmp_path):
    """A head started without token authentication (what `ray start --head` does where no token exists) answers
    a caller that sends none, and the app refuses it with how to turn it on; the module's head refuses such a
    caller, so the app goes on to it."""
    from explorer.errors import ExplorerError
    from explorer.train.backends import ray_backend

    assert ray_backend.answers_without_token(os.environ["EXPLORER_RAY_ADDRESS"]) is False
    port, folder = free_port(), Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", HOME=str(tmp_path))
    log = (folder / "head.log").open("wb")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
                             "--object-store-memory=100000000", f"--temp-dir={folder / 'ray'}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until(lambda: b"Ray runtime started." in (folder / "head.log").read_bytes() or head.poll() is not None,
                   HEAD_START_SECONDS, "the head without token authentication")
        assert head.poll() is None, (folder / "head.log").read_text()[-2000:]
        assert ray_backend.answers_without_token(f"127.0.0.1:{port}") is True
        with pytest.raises(ExplorerError, match="runs without token authentication, and PEFT Explorer requires it"):
            ray_backend.prepare_environment(f"127.0.0.1:{port}")
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_apps_own_ray_listens_on_127_0_0_1_only_and_wants_its_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "EXPLORER_RAY_ADDRESS"}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(settings.REPO_ROOT))  # no ~/.ray/auth_token: a fresh token
    done = subprocess.run([sys.executable, "-c", OWN_RAY], env=env, capture_output=True, text=True, timeout=300,
                          cwd=settings.REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["gcs"].startswith("127.0.0.1:") and seen["token"] is True
    assert seen["listening"] and set(seen["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1"}, seen["listening"]
    assert not (tmp_path / ".ray").exists(), "the token stays in the process environment, not in a file"
