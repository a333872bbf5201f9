"""Settings read from environment variables (documented in the README).

Read at call time, not import time, so tests and the CLI can change them per process.
"""

import os
from pathlib import Path

from .errors import ExplorerError
from .options import whole

REPO_ROOT = Path(__file__).resolve().parent.parent


def host() -> str:
    """EXPLORER_HOST: address the web app listens on (default 127.0.0.1: this machine only)."""
    return os.environ.get("EXPLORER_HOST", "127.0.0.1")


def port() -> int:
    """EXPLORER_PORT: port of the web app (default 7860)."""
    raw = os.environ.get("EXPLORER_PORT", "7860")
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"EXPLORER_PORT must be a port number, got {raw!r}")
    if not 1 <= value <= 65535:
        raise SystemExit(f"EXPLORER_PORT must be between 1 and 65535, got {value}")
    return value


def models_cache() -> Path:
    """EXPLORER_MODELS_CACHE: folder for converted models and training runs (default ./models_cache)."""
    return Path(os.environ.get("EXPLORER_MODELS_CACHE", REPO_ROOT / "models_cache")).resolve()


def runs_dir() -> Path:
    """EXPLORER_RUNS_DIR: where training runs are saved (default: models_cache/runs)."""
    override = os.environ.get("EXPLORER_RUNS_DIR")
    return Path(override).resolve() if override else models_cache() / "runs"


def races_dir() -> Path:
    """EXPLORER_RACES_DIR: where races are saved (default: models_cache/races)."""
    override = os.environ.get("EXPLORER_RACES_DIR")
    return Path(override).resolve() if override else models_cache() / "races"


def model_memory_budget_bytes() -> int:
    """EXPLORER_MODEL_MEMORY_GB: memory for loaded models (base models and Compare's adapted and merged
    copies); past it the least recently used are dropped (default 6 GB). One model is always kept."""
    raw = os.environ.get("EXPLORER_MODEL_MEMORY_GB", "6")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"EXPLORER_MODEL_MEMORY_GB must be a number of gigabytes, got {raw!r}")
    if not 0 < value < 1e6:
        raise SystemExit(f"EXPLORER_MODEL_MEMORY_GB must be a positive number of gigabytes, got {raw!r}")
    return int(value * 1e9)


# --------------------------------------------------------------------------- hosting limits
# Every limit below can only make the app stricter than its built-in bounds; defaults suit one user on a
# laptop. A teacher hosting the app for a class lowers them (see the README's "Hosting for a class").


def _whole(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        return whole(name, raw, low=minimum)
    except ExplorerError as error:  # a bad setting stops the app at start-up, naming the variable
        raise SystemExit(str(error).rstrip(".")) from None


def _gigabytes(name: str, default: float, allow_zero: bool) -> float:
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number of gigabytes, got {raw!r}")
    if not (0 <= value < 1e6) or (value == 0 and not allow_zero):
        raise SystemExit(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number of gigabytes, "
                         f"got {raw!r}")
    return value


def max_steps() -> int:
    """EXPLORER_MAX_STEPS: the most optimizer steps one training run may ask for (default 2000)."""
    return _whole("EXPLORER_MAX_STEPS", 2000)


def max_seq_len() -> int:
    """EXPLORER_MAX_SEQ_LEN: the longest sequence length (tokens per example) a run may ask for (default 2048)."""
    return _whole("EXPLORER_MAX_SEQ_LEN", 2048, minimum=8)


def max_batch() -> int:
    """EXPLORER_MAX_BATCH: the largest batch size (examples per micro-batch) a run may ask for (default 64)."""
    return _whole("EXPLORER_MAX_BATCH", 64)


def max_upload_bytes() -> int:
    """EXPLORER_MAX_UPLOAD_MB: the largest uploaded or pasted dataset, in megabytes of 10^6 bytes (default 5)."""
    raw = os.environ.get("EXPLORER_MAX_UPLOAD_MB", "").strip() or "5"
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"EXPLORER_MAX_UPLOAD_MB must be a number of megabytes, got {raw!r}")
    if not 0 < value <= 100_000:
        raise SystemExit(f"EXPLORER_MAX_UPLOAD_MB must be a positive number of megabytes (at most 100000), "
                         f"got {raw!r}")
    return int(value * 1_000_000)


def max_upload_rows() -> int:
    """EXPLORER_MAX_UPLOAD_ROWS: the most rows an uploaded or pasted dataset may have (default 20000)."""
    return _whole("EXPLORER_MAX_UPLOAD_ROWS", 20_000)


def max_queue() -> int:
    """EXPLORER_MAX_QUEUE: training runs that may wait behind the running ones (default 8); past it a new run
    is refused with "the training queue is full"."""
    return _whole("EXPLORER_MAX_QUEUE", 8)


def max_concurrent_jobs(backend: str | None = None) -> int:
    """EXPLORER_MAX_CONCURRENT_JOBS: training jobs running at once (default 1 with the local backend: each
    worker holds its own copy of the model, so raise it only with the memory or GPUs for that many runs).
    With EXPLORER_JOB_BACKEND=ray, unset means as many as the cluster has room for; set, it caps them."""
    return _whole("EXPLORER_MAX_CONCURRENT_JOBS", 1 if (backend or job_backend()) == "local" else UNCAPPED)


UNCAPPED = 1_000_000  # "no cap of the app's own": the Ray cluster's capacity decides
JOB_BACKENDS = ("local", "ray")


def job_backend() -> str:
    """EXPLORER_JOB_BACKEND: where fine-tunes, race entrants and demo runs train: "local" (default: worker
    processes on this machine) or "ray" (tasks on a Ray cluster, see EXPLORER_RAY_ADDRESS)."""
    value = os.environ.get("EXPLORER_JOB_BACKEND", "").strip().lower() or "local"
    if value not in JOB_BACKENDS:
        raise SystemExit(f"EXPLORER_JOB_BACKEND must be one of {', '.join(JOB_BACKENDS)}, got {value!r}")
    return value


def ray_address() -> str | None:
    """EXPLORER_RAY_ADDRESS: the head of an existing Ray cluster, HOST:PORT (default: unset, the app starts its
    own Ray on this machine, bound to 127.0.0.1). Jobs authenticate with Ray's token (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."""
    raw = os.environ.get("EXPLORER_RAY_ADDRESS", "").strip()
    if not raw:
        return None
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host or "/" in host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SystemExit(f"EXPLORER_RAY_ADDRESS must be HOST:PORT of a Ray head (e.g. 10.0.0.5:6379), got {raw!r}")
    return f"{host}:{int(port_text)}"


def ray_cpus_per_job() -> int:
    """EXPLORER_RAY_CPUS_PER_JOB: CPU cores each job asks Ray for on a cluster without GPUs (default 1; on a
    cluster with GPUs each job asks for one GPU and one core)."""
    return _whole("EXPLORER_RAY_CPUS_PER_JOB", 1)


def cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's share; else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_threads() -> int:
    """EXPLORER_WORKER_THREADS: torch threads of a training worker (default: the cores less one, at least 1),
    so the web server keeps a core's worth of time for its users while a run trains."""
    return _whole("EXPLORER_WORKER_THREADS", max(1, cores() - 1))


def worker_nice() -> int:
    """EXPLORER_WORKER_NICE: how much lower a training worker's CPU priority is than the server's (the niceness
    it adds, 0-19; default 0). The core the worker leaves free (worker_threads) is what keeps the server
    responsive; a lower priority on top let the server's bursts take the training's own core: with 20 users
    asking at once (bench/class_load.py, 2 cores) the training kept 0.65 of its tokens/s at 10 and 0.91 at 0,
    while the answers' p95 stayed under 1 s."""
    value = _whole("EXPLORER_WORKER_NICE", 0, minimum=0)
    if value > 19:
        raise SystemExit(f"EXPLORER_WORKER_NICE must be between 0 and 19, got {value}")
    return value


def concurrency() -> int:
    """EXPLORER_CONCURRENCY: requests the web app serves at once for each action (default 16): Calculator
    and Compare calls of different users, and every user's Fine-tune progress stream, run side by side
    instead of waiting for each other (Gradio's own default is 1)."""
    return _whole("EXPLORER_CONCURRENCY", 16)


def disk_budget_bytes() -> int:
    """EXPLORER_DISK_BUDGET_GB: the most disk the training runs may use, in gigabytes (default 0: no limit).
    What happens past it is EXPLORER_DISK_POLICY's choice."""
    return int(_gigabytes("EXPLORER_DISK_BUDGET_GB", 0, allow_zero=True) * 1e9)


DISK_POLICIES = ("refuse", "prune-oldest")


def disk_policy() -> str:
    """EXPLORER_DISK_POLICY: when the runs use more than EXPLORER_DISK_BUDGET_GB, "refuse" new runs (default)
    or "prune-oldest": delete the oldest finished runs (never queued or running ones) until under budget."""
    value = os.environ.get("EXPLORER_DISK_POLICY", "").strip().lower() or "refuse"
    if value not in DISK_POLICIES:
        raise SystemExit(f"EXPLORER_DISK_POLICY must be one of {', '.join(DISK_POLICIES)}, got {value!r}")
    return value


MODEL_SOURCES = ("registry", "local", "hub", "any")


def model_sources() -> str:
    """EXPLORER_MODEL_SOURCES: which models a user may name.

    - unset or "any": registry names, any model folder path and hub ids (one user on their own machine);
    - "registry": only the registry's names (the shipped models and folders inside models_cache);
    - "local": also model folders under EXPLORER_ALLOWED_MODEL_ROOT (symlinks resolved, ".." refused);
    - "hub": as "local", plus hub ids (org/name) when the machine is online.
    Set it to "registry" when hosting the app for others.
    """
    value = os.environ.get("EXPLORER_MODEL_SOURCES", "").strip().lower() or "any"
    if value not in MODEL_SOURCES:
        raise SystemExit(f"EXPLORER_MODEL_SOURCES must be one of {', '.join(MODEL_SOURCES)}, got {value!r}")
    return value


def allowed_model_root() -> Path:
    """EXPLORER_ALLOWED_MODEL_ROOT: the folder whose model folders EXPLORER_MODEL_SOURCES=local|hub allows
    (default: models_cache). Its real path (symlinks resolved) is what counts."""
    override = os.environ.get("EXPLORER_ALLOWED_MODEL_ROOT", "").strip()
    return Path(override).expanduser().resolve() if override else models_cache()


def auth() -> list[tuple[str, str]] | None:
    """EXPLORER_AUTH ("user:password[,user2:password2]") and EXPLORER_AUTH_FILE (a file of user:password
    lines; blank lines and lines starting with # are skipped): the logins the web app asks for (default:
    none, anyone who reaches the port can use it). A password may contain ":" (the first one separates);
    in EXPLORER_AUTH it cannot contain ",", so use the file for such passwords."""
    pairs: list[tuple[str, str]] = []
    raw = os.environ.get("EXPLORER_AUTH", "")
    for i, item in enumerate(raw.split(","), start=1):
        if item.strip():
            pairs.append(_login(item.strip(), f"EXPLORER_AUTH entry {i}"))
    file_name = os.environ.get("EXPLORER_AUTH_FILE", "").strip()
    if file_name:
        try:
            lines = Path(file_name).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise SystemExit(f"EXPLORER_AUTH_FILE {file_name!r} cannot be read: {error}")
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                pairs.append(_login(line, f"EXPLORER_AUTH_FILE line {number}"))
        if not any(line.strip() and not line.strip().startswith("#") for line in lines):
            raise SystemExit(f"EXPLORER_AUTH_FILE {file_name!r} holds no user:password line")
    users = [user for user, _ in pairs]
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise SystemExit(f"EXPLORER_AUTH/EXPLORER_AUTH_FILE name the user(s) {', '.join(duplicates)} more than once")
    return pairs or None


def _login(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    user = user.strip()
    if not sep or not user or not password:
        # never echo the text: it may hold a password
        raise SystemExit(f"{where} must be user:password with a non-empty user and password")
    return user, password


def check_all() -> None:
    """Read every setting once, so a bad value stops the app at start-up with its message (SystemExit)
    instead of failing the first request that reads it."""
    for read in (host, port, models_cache, runs_dir, model_memory_budget_bytes, max_steps, max_seq_len, max_batch,
                 max_upload_bytes, max_upload_rows, max_queue, job_backend, max_concurrent_jobs, ray_address,
                 ray_cpus_per_job, worker_threads, worker_nice, concurrency, disk_budget_bytes,
                 disk_policy, model_sources, allowed_model_root, auth):
        read()
