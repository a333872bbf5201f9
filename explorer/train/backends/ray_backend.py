"""The Ray backend: every job is a task on a Ray cluster, one GPU each when the cluster has GPUs (else
EXPLORER_RAY_CPUS_PER_JOB cores), so jobs run side by side up to the cluster's capacity.

EXPLORER_RAY_ADDRESS names an existing cluster's head (HOST:PORT); unset, the app starts its own Ray on this
machine, bound to 127.0.0.1. Ray's token authentication is always on (RAY_AUTH_MODE=token): a classroom
network must not be able to submit jobs. The token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token, as Ray reads it; for its own local Ray the app makes a fresh one when there is none. A
cluster named by EXPLORER_RAY_ADDRESS that answers a caller without a token is refused before connecting: Ray's
client connects to it with a token all the same (checked with Ray 2.60), and anyone on the network could run code.

The node runs the job's command in a temporary copy of its folders (explorer.train.backends.ray_node) and
streams every change back; this side writes them into the server's folders (explorer.train.backends.sync)
and forwards stop requests. A worker process or node that dies ends the job with the reason; the other
jobs go on. When the server stops, Ray ends its tasks, and the next start marks their runs interrupted.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from ... import settings
from ...errors import ExplorerError
from .. import lifecycle, runs
from . import ray_node, sync
from .base import Ended, Job

LOOPBACK = ("127.0.0.1", "localhost")


def token_available() -> bool:
    """Whether Ray will find a token where it looks: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    return Path(path).expanduser().is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


# Asked in a child process with token authentication off: Ray reads its mode once per process.
ANSWERS_WITHOUT_TOKEN = """
import sys
from ray._raylet import GcsClient
GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10)
"""
PROBE_SECONDS = 30  # an unreachable address makes Ray's client wait ~40 s; ray.init then reports it


def answers_without_token(address: str) -> bool | None:
    """Whether the cluster at ``address`` answers a caller that sends no token (True: it runs without token
    authentication); None when it gave no answer either way (unreachable, too slow), which ray.init reports."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["RAY_AUTH_MODE"] = "disabled"
    try:
        done = subprocess.run([sys.executable, "-c", ANSWERS_WITHOUT_TOKEN, address], env=env, capture_output=True,
                              text=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode == 0:
        return True
    return False if "AuthenticationError" in done.stderr else None


def without_token_authentication(address: str) -> ExplorerError:
    return ExplorerError(
        f"The Ray cluster at {address} runs without token authentication, and PEFT Explorer requires it (without "
        "it anyone who reaches the cluster can run code there). Turn it on: on the head, `ray get-auth-token "
        "--generate`, then restart Ray with `RAY_AUTH_MODE=token ray start --head ...` (each node joins with "
        "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set to that token), and start the app with RAY_AUTH_TOKEN set to it "
        "too (docs/cluster.md).")


def prepare_environment(address: str | None) -> None:
    """Before Ray starts or connects: token authentication on, and a Ray of our own kept on 127.0.0.1."""
    if address is None or address.rpartition(":")[0] in LOOPBACK:
        # Ray otherwise binds to the machine's outward address, even for 127.0.0.1 (services.
        # resolve_ip_for_localhost); single-machine mode keeps every socket on loopback.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    if address is None:
        if not token_available():
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # as Ray's own generator: 256 random bits
        return
    answers = answers_without_token(address)
    if answers:
        raise without_token_authentication(address)
    if not token_available():
        state = "uses token authentication" if answers is False else \
            "gave no answer (check the address), and PEFT Explorer uses Ray only with token authentication"
        raise ExplorerError(f"The Ray cluster at {address} {state}; no token was found here: set RAY_AUTH_TOKEN (or "
                            "RAY_AUTH_TOKEN_PATH) to the head's token (`ray get-auth-token` on the head; "
                            "docs/cluster.md).")


class RayBackend:
    name = "ray"
    recheck_seconds = 5.0   # nodes may join the cluster: look for free slots again this often

    def __init__(self, address: str | None):
        self.address = address
        self._lock = threading.Lock()
        self._task = None
        self._signals = None

    @property
    def where(self) -> str:
        return self.address or "a local Ray on 127.0.0.1"

    def check(self) -> None:
        self._connect()

    def _connect(self) -> None:
        with self._lock:
            if self._task is not None:
                return
            prepare_environment(self.address)
            import ray

            try:
                if not ray.is_initialized():
                    ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR, configure_logging=True)
            except Exception as error:  # noqa: BLE001 - unreachable, refused token, version mismatch
                raise ExplorerError(f"Could not reach the Ray cluster at {self.where} (EXPLORER_RAY_ADDRESS): "
                                    f"{type(error).__name__}: {str(error).splitlines()[0][:300]}") from None
            self._signals = ray.remote(num_cpus=0)(ray_node.Signals).remote()
            # No retries: a job whose worker died is reported failed, never silently trained twice.
            self._task = ray.remote(max_retries=0)(ray_node.run_job)

    def _resources(self) -> dict:
        import ray

        total = ray.cluster_resources()
        if total.get("GPU", 0) >= 1:
            return {"num_gpus": 1, "num_cpus": 1}
        cpus = settings.ray_cpus_per_job()
        if total.get("CPU", 0) < cpus:
            raise ExplorerError(f"The Ray cluster has {total.get('CPU', 0):g} CPU cores and no GPU; each job asks "
                                f"for {cpus} (EXPLORER_RAY_CPUS_PER_JOB).")
        return {"num_gpus": 0, "num_cpus": cpus}

    def slots(self) -> int:
        """One job per GPU, or per EXPLORER_RAY_CPUS_PER_JOB cores, in the whole cluster."""
        self._connect()
        import ray

        total = ray.cluster_resources()
        if total.get("GPU", 0) >= 1:
            return int(total["GPU"])
        return max(1, int(total.get("CPU", 0) // settings.ray_cpus_per_job()))

    def start(self, job: Job) -> "RayHandle":
        self._connect()
        try:
            bundle = sync.pack(job.folders)
        except OSError as error:
            raise runs.not_writable(job.log_dir, error) from None
        key = uuid.uuid4().hex
        stream = self._task.options(**self._resources(), name=f"explorer-{job.name}").remote(
            bundle, list(job.command), sys.executable, str(job.log_dir), self._signals, key)
        return RayHandle(job, stream, self._signals, key)


class RayHandle:
    """A job running on the cluster: its stream of changes applied here, stop requests forwarded there."""

    def __init__(self, job: Job, stream, signals, key: str):
        self.job, self.stream, self.signals, self.key = job, stream, signals, key
        self.where: dict = {}

    def wait(self) -> Ended:
        import ray

        receiver = sync.Receiver(self.job.folders, self._status, accepts=self._accepts)
        done = threading.Event()
        threading.Thread(target=self._forward_signals, args=(done,), daemon=True,
                         name=f"explorer-ray-signals-{self.job.name}").start()
        code = None
        try:
            for ref in self.stream:
                message = ray.get(ref)
                if message[0] == "started":
                    self.where = message[1]
                elif message[0] == "exit":
                    code = message[1]
                else:
                    receiver.apply(message)
        except ray.exceptions.RayError as error:
            return Ended(None, self._lost(error))
        except (ExplorerError, ValueError) as error:  # this side could not write (full disk), or a bad message
            try:
                ray.cancel(self.stream, force=True)
            except Exception:  # noqa: BLE001 - already ended
                pass
            return Ended(None, f"The job's results could not be kept: {error}")
        finally:
            done.set()
            receiver.discard()
            self.signals.forget.remote(self.key)
        if code is None:
            return Ended(None, f"The Ray task on node {self.where.get('node', '?')} ended without the exit code "
                               "of its worker.")
        return Ended(code)

    def _accepts(self, folder: Path) -> bool:
        return folder not in self.job.runs or runs.status(folder).get("state") != "cancelled"

    def _status(self, folder: Path, status: dict) -> None:
        """A status change on the node, recorded here. The pid is this server's: the job lives as long as the
        server does (Ray ends a driver's tasks with it), so a restart finds the run interrupted, as locally."""
        if folder not in self.job.runs or "state" not in status:
            return
        extra = {k: v for k, v in status.items() if k not in ("state", "time", "pid")}
        lifecycle.change(folder, status["state"], **extra, pid=os.getpid(), backend="ray",
                         node=self.where.get("node", ""), device=self.where.get("device", ""),
                         worker_pid=self.where.get("worker_pid"), job_pid=status.get("pid"))

    def _forward_signals(self, done: threading.Event) -> None:
        """Stop files and cancellations made on this side (the page, the CLI) go to the node."""
        sent: set[tuple[str, str]] = set()
        while not done.wait(ray_node.SIGNAL_SECONDS):
            for folder in self.job.folders:
                wanted = []
                if (folder / sync.STOP_FILE).exists():
                    wanted.append(("stop", str(folder)))
                if folder in self.job.runs and runs.status(folder).get("state") == "cancelled":
                    wanted.append(("cancel", str(folder)))
                for signal in wanted:
                    if signal not in sent:
                        sent.add(signal)
                        self.signals.post.remote(self.key, *signal)

    def _lost(self, error: BaseException) -> str:
        import ray.exceptions as rex

        node = self.where.get("node") or "?"
        first = (str(error).strip().splitlines() or [""])[0][:300]
        if isinstance(error, rex.RayTaskError):
            cause = getattr(error, "cause", None) or error
            return (f"The job failed on Ray node {node}: {type(cause).__name__}: "
                    f"{(str(cause).strip().splitlines() or [''])[0][:300]}")
        if isinstance(error, rex.OutOfMemoryError):
            return (f"Ray killed the job's worker on node {node} because the node ran out of memory. "
                    f"{lifecycle.MEMORY_HINT}")
        if isinstance(error, rex.WorkerCrashedError):
            return f"The Ray worker process running this job on node {node} died ({first})."
        if isinstance(error, (rex.NodeDiedError, rex.LocalRayletDiedError)):
            return f"The Ray node {node} running this job died ({first})."
        return f"The Ray job on node {node} was lost: {type(error).__name__}: {first}"
