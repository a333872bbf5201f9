"""A class at once: 20 users ask the Calculator API together, with and without a fine-tune training beside it.

Usage: python bench/class_load.py [--users 20] [--model smollm2-135m-instruct] [--window 6] [--rounds 8]
                                  [--seconds 240] [--plain-training] [--users-nice 10] [--url URL] [--quick]
README figures: python bench/class_load.py

Starts the app (``python app.py`` on 127.0.0.1, a free port, fresh run folders) and a LoRA fine-tune of the
bundled model (``python -m explorer train ... --as-worker``: the threads and CPU priority of the app's own
training worker; ``--plain-training`` trains with torch's defaults instead), each a process of its own,
stopped by its pid (``--url`` asks an app already serving there instead). ``--users`` gradio_client users open the app (one answer each: the session a page
load makes), then, all at the same moment, ask ``/calc`` three questions each (issue 18), burst after burst
for a window of ``--window`` seconds:
- "repeated": catalog models, methods and ranks from a small pool asked before (as a class moves the same
  few sliders): the server answers from its shared cache;
- "mixed": two of the three from the pool, the third a combination nobody asked yet, formula-first
  (wait_for_exact=false: the formulas at once, the exact count built in the background).
With the training running, each round also has a "quiet" window (no questions): the training's tokens/s
in the question windows over the quiet one is the load's cost to the training. Windows run in rotating order
(bench/measure.py), the repeated window twice per round (the A/A control: its answers/s ratio is the run's
resolution, used for every figure of its phase). Latencies are pooled over a phase's windows; p95 and
median come with distribution-free 95% intervals (a p95 needs 72 answers).

Targets (issue 18): p95 < 1 s for repeated questions while the training runs; >= 50 answers/s for
repeated questions; first-time questions answer at once (p95 < 1 s); the training's tokens/s under load at
least 0.85 of its tokens/s alone. ``--quick`` runs everything on the tiny model in a few windows (a smoke
test: too few samples for verdicts).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import measure  # noqa: E402

POOL_MODELS = ["gpt2", "smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "llama-2-7b", "mistral-7b"]
POOL_METHODS = [("lora", {"r": 4}), ("lora", {"r": 8}), ("lora", {"r": 16}), ("ia3", {}),
                ("adapter", {"bottleneck_dim": 16}), ("prefix", {"num_virtual_tokens": 8})]
NEW_MODELS = ["gpt2", "smollm2-135m", "qwen2.5-0.5b"]  # small: their background builds take a fraction of a second


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**env, "EXPLORER_HOST": "127.0.0.1",
                                                               "EXPLORER_PORT": str(port)})
    return process, f"http://127.0.0.1:{port}/"


def wait_for_app(process: subprocess.Popen, url: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with status {process.returncode} before serving {url}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the app did not serve {url} within {timeout:.0f} s")


def start_training(model: str, env: dict, as_worker: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "explorer", "train", "--model", model, "--method", "lora", "--dataset", "pirate",
               "--steps", "2000", "--set", "eval_examples=0", "--set", "eval_every=100000"]
    return subprocess.Popen(command + (["--as-worker"] if as_worker else []), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C by pid (the CLI marks its run interrupted; the app closes), then a kill if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def training_log(runs_dir: Path) -> list[dict]:
    logs = list(runs_dir.glob("*/log.jsonl"))
    if not logs:
        return []
    return [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip().endswith("}")]


def wait_for_steps(runs_dir: Path, training: subprocess.Popen, steps: int = 2, timeout: float = 600) -> dict:
    """The training's start event, once it has taken ``steps`` steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = training_log(runs_dir)
        if sum(e.get("event") == "step" for e in events) >= steps:
            return next(e for e in events if e.get("event") == "start")
        if training.poll() is not None:
            raise SystemExit(f"the training exited with status {training.returncode}: {events[-1:] or 'no log'}")
        time.sleep(0.5)
    raise SystemExit(f"the training took no {steps} steps within {timeout:.0f} s")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (this one when ``pid`` is None), from /proc (Linux)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the app's exact-count build process)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its children now alive (the server and its build process)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def cpu_line(label: str, before: dict, after: dict, answers: int, wall: float) -> str:
    """Where the phase's CPU time went: the server's and the users' (this process) per answer, the training's
    share of a core. The users' clients run on the same two cores here; a class's run on the students' machines."""
    used = {k: after[k] - before[k] for k in before}
    parts = [f"{name} {used[key]:.0f} s ({1000 * used[key] / max(answers, 1):.1f} ms per answer)"
             for key, name in (("server", "server"), ("users", "users' clients")) if key in used]
    if "training" in used:
        parts.append(f"training {used['training'] / wall:.2f} of a core")
    return f"CPU, {label} ({answers} answers in {wall:.0f} s): " + ", ".join(parts)


def step_rates(events: list[dict]) -> list[tuple[float, float, float, float]]:
    """(wall start, wall end, tokens, train seconds) of every step, from the log's cumulative figures."""
    steps, previous = [], (0.0, 0.0)
    for e in (e for e in events if e.get("event") == "step"):
        tokens, seconds = e["tokens_per_second"] * e["elapsed"], e["elapsed"]
        took = seconds - previous[1]
        steps.append((e["time"] - took, e["time"], tokens - previous[0], took))
        previous = (tokens, seconds)
    return steps[1:]  # the first step warms up


def rate(steps, spans: list[tuple[float, float]]) -> float:
    """Tokens per second of training time in these wall-clock spans, each step weighted by the share of its wall
    time inside them (NaN when no step overlaps them)."""
    tokens = seconds = 0.0
    for begin, end, step_tokens, step_seconds in steps:
        share = sum(max(0.0, min(end, b) - max(begin, a)) for a, b in spans) / max(end - begin, 1e-9)
        tokens, seconds = tokens + share * step_tokens, seconds + share * step_seconds
    return tokens / seconds if seconds else float("nan")


def stream_closed(client, timeout: float = 5.0) -> None:
    """Wait until the event stream of the client's last answer is closed before its next question.

    gradio_client 2.7.2 attaches a question sent while that stream is open to it; the server closes the stream
    once none of the session's questions is pending (gradio/routes.py), and the client then cancels what was
    attached (client.py, close_stream): CancelledError, though the server had the question. A reader thread that
    reads the close late (the niced users beside a training) let one question in first in a whole run ("errors:
    1 (first: CancelledError)"). With a 0.3 s delay put before the reader handles the close, a client's second
    question failed at once; with this wait, 1200 answers of 20 users had no error. Browsers use their own client."""
    deadline = time.monotonic() + timeout
    while client.stream_open and time.monotonic() < deadline:
        time.sleep(0.002)


class Class:
    """The users, their questions and every answer's latency."""

    def __init__(self, url: str, users: int, pool_size: int, small: bool = False, seed: int = 0):
        from gradio_client import Client

        self.clients = [Client(url, verbose=False, ssl_verify=False) for _ in range(users)]
        rng = random.Random(seed)
        combos = list(itertools.product(NEW_MODELS if small else POOL_MODELS, POOL_METHODS))
        self.pool = [(m, name, options) for m, (name, options) in rng.sample(combos, min(pool_size, len(combos)))]
        self.asked = {repr(combo) for combo in self.pool}
        self.expected: dict[str, int] = {}
        self.new_answers: list[tuple[tuple, dict]] = []
        self.latencies: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.rng = rng

    def fresh(self) -> tuple:
        """A LoRA question nobody asked yet: a small catalog model, a rank and an alpha (786,432 of them)."""
        while True:
            combo = (self.rng.choice(NEW_MODELS), "lora", {"r": self.rng.randint(1, 4096),
                                                          "lora_alpha": self.rng.randint(1, 64)})
            if repr(combo) not in self.asked:
                self.asked.add(repr(combo))
                return combo

    def ask(self, client, combo, wait: bool = True) -> tuple[float, dict]:
        model, method, options = combo
        stream_closed(client)
        start = time.perf_counter()
        answer = client.predict(model, method, json.dumps(options), "", wait, api_name="/calc")
        return time.perf_counter() - start, answer

    def open_app(self) -> None:
        """Every user's first answer (their session), and every pool question answered once, exactly."""
        for i, client in enumerate(self.clients):
            combo = self.pool[i % len(self.pool)]
            self.ask(client, combo)
        for combo in self.pool:
            _, answer = self.ask(self.clients[0], combo)
            if "error" in answer or not answer["exact"]:
                raise SystemExit(f"{combo}: {answer}")
            self.expected[repr(combo)] = answer["trainable_params"]

    def burst(self, kind: str) -> tuple[int, float]:
        """All users at the same moment, three questions each: (answers, seconds)."""
        plans = []
        for _ in self.clients:
            questions = [(self.rng.choice(self.pool), True) for _ in range(3)]
            if kind == "mixed":
                questions[self.rng.randrange(3)] = (self.fresh(), False)
            plans.append(questions)
        together, latencies = threading.Barrier(len(self.clients)), []

        def user(client, questions):
            try:
                together.wait(timeout=60)
                for combo, wait in questions:
                    seconds, answer = self.ask(client, combo, wait)
                    latencies.append(seconds)
                    if "error" in answer:
                        self.errors.append(f"{combo}: {answer['error']}")
                    elif wait and answer["trainable_params"] != self.expected[repr(combo)]:
                        self.errors.append(f"{combo}: {answer['trainable_params']} != {self.expected[repr(combo)]}")
                    elif not wait:
                        self.new_answers.append((combo, answer))
            except Exception as error:  # noqa: BLE001 - reported after the bench
                self.errors.append(f"{type(error).__name__}: {error}")

        threads = [threading.Thread(target=user, args=pair) for pair in zip(self.clients, plans)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.latencies.setdefault(kind, []).extend(latencies)
        return len(latencies), time.perf_counter() - start

    def window(self, kind: str, seconds: float, windows: list) -> float:
        """Bursts back to back for ``seconds`` (at least one): answers per second."""
        start, answers, busy = time.time(), 0, 0.0
        while True:
            count, took = self.burst(kind)
            answers, busy = answers + count, busy + took
            if time.time() - start >= seconds:
                break
        windows.append((kind, start, time.time()))
        return answers / busy

    def quiet(self, seconds: float, windows: list) -> float:
        """No questions for ``seconds``: the training alone (no answers per second to report)."""
        start = time.time()
        time.sleep(seconds)
        windows.append(("quiet", start, time.time()))
        return float("nan")

    def recheck_new(self, limit: int = 10) -> tuple[int, int]:
        """First-time questions asked again (waiting for the exact count): (asked, same count and exact)."""
        same = 0
        for combo, first in self.new_answers[:limit]:
            _, again = self.ask(self.clients[0], combo)
            same += bool(again.get("exact")) and again["trainable_params"] == first["trainable_params"]
        return min(limit, len(self.new_answers)), same


def phase(users: Class, training: bool, args, pids: dict) -> tuple[measure.Rounds, list]:
    windows: list = []
    cpu = lambda: {"users": cpu_seconds(), **{k: process_tree_cpu(pid) for k, pid in pids.items()}}  # noqa: E731
    before, started, answered = cpu(), time.time(), sum(map(len, users.latencies.values()))
    slots = {"repeated": lambda: users.window("repeated", args.window, windows),
             "mixed": lambda: users.window("mixed", args.window, windows)}
    if training:
        slots["quiet"] = lambda: users.quiet(args.window, windows)
    label = "training" if training else "no training"
    rounds = measure.interleave(slots, control="repeated", seconds=args.seconds, warmup=1, max_rounds=args.rounds,
                                progress=lambda r: print(f"  {label}: round {r.count}, {r.seconds:.0f} s", flush=True))
    print(cpu_line(label, before, cpu(), sum(map(len, users.latencies.values())) - answered, time.time() - started),
          flush=True)
    return rounds, windows


def training_ratios(windows: list, steps) -> list[float]:
    """Per quiet window: the training's tokens/s in the question windows since the previous quiet one, over its
    tokens/s in the quiet window. A step counts in a window by the share of its wall time inside it (a step
    of the bundled model can outlast a window on a busy machine)."""
    ratios, loaded = [], []
    for kind, start, end in windows:
        if kind != "quiet":
            loaded.append((start, end))
            continue
        ratios.append(rate(steps, loaded) / rate(steps, [(start, end)]))
        loaded = []
    return ratios


def figures_of(label: str, rounds: measure.Rounds, latencies: dict, training: bool) -> list[measure.Figure]:
    noise = rounds.resolution()
    repeated = latencies["repeated"]
    return [
        measure.Figure(f"{label}: repeated answers/s", rounds.interval("repeated"), noise,
                       None if training else measure.at_least(50), fmt="{:.1f}"),
        measure.Figure(f"{label}: repeated median s", measure.median_interval(repeated), noise),
        measure.Figure(f"{label}: repeated p95 s", measure.quantile_interval(repeated, 0.95), noise,
                       measure.at_most(1.0)),
        measure.Figure(f"{label}: mixed (1 in 3 new) p95 s", measure.quantile_interval(latencies["mixed"], 0.95),
                       noise, measure.at_most(1.0)),
        measure.Figure(f"A/A {label}: repeated / repeated answers/s", rounds.control_ratio(), noise),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the model the training fine-tunes")
    parser.add_argument("--pool", type=int, default=12, help="distinct repeated questions")
    parser.add_argument("--window", type=float, default=6.0, help="seconds of each window")
    parser.add_argument("--rounds", type=int, default=8, help="most rounds per phase")
    parser.add_argument("--seconds", type=float, default=240.0, help="time cap of each phase")
    parser.add_argument("--plain-training", action="store_true", help="train with torch's default threads and "
                        "priority instead of the app worker's settings")
    parser.add_argument("--users-nice", type=int, default=10, help="CPU niceness of the simulated users (this "
                        "process's threads; the app and the training keep theirs). A class's browsers run on the "
                        "students' machines: at 10 the simulated ones yield to the server and the training "
                        "(priority 0) but not to the app's background count builds (19), which remote browsers "
                        "never wait behind; any wait for CPU counts in their latencies. 0 lets them compete")
    parser.add_argument("--url", default=None, help="ask the app already serving at this address instead of "
                        "starting one")
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 users, small catalog models, short "
                        "windows, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.users, args.pool, args.window, args.rounds = "tiny-random-llama", 3, 2, 0.3, 1
        args.users_nice = 0  # a smoke test may run inside another process (pytest): leave its priority alone
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "EXPLORER_RUNS_DIR": tempfile.mkdtemp(prefix="bench-class-runs-"),
           "EXPLORER_RACES_DIR": tempfile.mkdtemp(prefix="bench-class-races-")}
    runs_dir = Path(env["EXPLORER_RUNS_DIR"])
    started = time.time()
    app, url = start_app(env) if args.url is None else (None, args.url)
    training = start_training(args.model, env, not args.plain_training)  # both start up at once
    try:
        if app is not None:
            wait_for_app(app, url)
        if args.users_nice:  # after starting the app and the training, before the users' threads exist
            os.nice(args.users_nice)
        users = Class(url, args.users, args.pool, small=args.quick)
        users.open_app()
        start_event = wait_for_steps(runs_dir, training)
        print(f"app up ({url}) and {args.users} users in {time.time() - started:.0f} s; training {args.model} with "
              f"{start_event.get('cpu_threads')} threads at niceness {start_event.get('niceness')} on "
              f"{os.cpu_count()} cores; users at niceness {os.nice(0)}", flush=True)
        server = {"server": app.pid} if app is not None else {}
        with_training, training_windows = phase(users, True, args, {**server, "training": training.pid})
        stop(training)
        steps = step_rates(training_log(runs_dir))
        latencies_training, users.latencies = users.latencies, {}
        without, _ = phase(users, False, args, server)
        asked, same = users.recheck_new(3 if args.quick else 10)  # each waits for its background exact build
    finally:
        stop(training)
        if app is not None:
            stop(app)
    ratio = measure.median_interval(training_ratios(training_windows, steps))
    figures = (figures_of("training", with_training, latencies_training, True)
               + [measure.Figure("training tokens/s: under load / alone", ratio, with_training.resolution(),
                                 measure.at_least(0.85))]
               + figures_of("no training", without, users.latencies, False))
    note = f"{args.users} users, {with_training.describe()}; {without.describe()}; {time.time() - started:.0f} s"
    print(measure.final_block("class_load", figures, note))
    print(f"first-time questions: {len(users.new_answers)} answered formula-first "
          f"({sum(not a['exact'] for _, a in users.new_answers)} with \"exact\": false); {asked} asked again later: "
          f"{same} exact with the same trainable count")
    print(f"errors: {len(users.errors)}" + (f" (first: {users.errors[0]})" if users.errors else ""))


if __name__ == "__main__":
    main()
