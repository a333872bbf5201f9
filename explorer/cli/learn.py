"""The Learn tab's commands: ``recommend`` (the decision helper) and ``compose`` (the composition experiment).

Registered by explorer/__main__.py's parser; errors are ExplorerError, printed there as one line.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from ..errors import ExplorerError
from ..methods import METHODS
from ..options import whole as parse_whole
from ..train import runs

JOB_FLAGS = {"model": "--model", "memory_gb": "--memory-gb", "examples": "--examples", "goal": "--goal",
             "latency_sensitive": "--latency-sensitive", "many_adapters": "--many-adapters"}


def cmd_recommend(args) -> None:
    from ..learn import recommend

    given = {name: getattr(args, name) for name in JOB_FLAGS if getattr(args, name) not in (None, False)}
    if args.list_scenarios:
        if given or args.scenario:
            raise ExplorerError("--list-scenarios takes no job options and no --scenario.")
        rows = [{"name": name, "method": s.method, "job": dataclasses.asdict(s.job), "summary": s.summary}
                for name, s in recommend.SCENARIOS.items()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        for row in rows:
            print(f"{row['name']}: {row['summary']}")
        return
    scenario = None
    if args.scenario is not None:
        scenario = recommend.SCENARIOS.get(args.scenario.strip())
        if scenario is None:
            raise ExplorerError(f"There is no scenario {args.scenario!r}; the textbook section's scenarios are: "
                                f"{', '.join(recommend.SCENARIOS)}.")
        if given:
            raise ExplorerError(f"--scenario runs the textbook section's job as written: drop "
                                f"{', '.join(JOB_FLAGS[name] for name in given)}.")
        job = scenario.job
    else:
        job = recommend.Job.parse(given)
    rec = recommend.recommend(job)
    if args.json:
        out = rec.as_json()
        if scenario is not None:
            out["scenario"] = {"name": args.scenario.strip(), "chapter_method": scenario.method,
                               "summary": scenario.summary, "job": dataclasses.asdict(scenario.job)}
        print(json.dumps(out, indent=2))
        return
    if scenario is not None:
        print(f"scenario {args.scenario.strip()}: {scenario.summary}")
    flags = [name.replace("_", "-") for name in ("latency_sensitive", "many_adapters") if getattr(job, name)]
    print(f"job: {job.model}, {job.memory_gb:g} GiB, {job.examples:,} examples, goal {job.goal}"
          + "".join(f", {flag}" for flag in flags))
    print(f"\nrecommended: {rec.method} ({rec.title})" + ("" if rec.fits else ": nothing fits in memory"))
    print("options: " + ", ".join(f"{k}={v}" for k, v in rec.options.items()))
    print("settings: " + ", ".join(f"{k}={v}" for k, v in rec.settings.items()))
    for reason in rec.reasons:
        print(f"  - {reason}")
    print("fits in memory: " + ("yes" if rec.fits else "no"))
    if rec.not_fitting:
        print("does not fit: " + ", ".join(f"{row['method']} needs {row['needed_gb']:.1f} GiB"
                                           for row in rec.not_fitting))
    if rec.runner_up:
        print(f"runner-up: {rec.runner_up.method} ({rec.runner_up.title}), "
              + ", ".join(f"{k}={v}" for k, v in rec.runner_up.options.items()))
        for reason in rec.runner_up.reasons:
            print(f"  - {reason}")
    else:
        print("runner-up: none fits")
    if rec.chapter_note:
        print(f"textbook note: {rec.chapter_note}")
    if rec.try_it:
        print(rec.try_it.replace("`", ""))
    if scenario is not None:
        agree = "agrees" if rec.method == scenario.method else f"differs (the textbook section picks {scenario.method})"
        print(f"the textbook section: {scenario.method}; the helper {agree}")


def parse_pair(flag: str, text: str, what: str) -> list[str]:
    parts = [part.strip() for part in (text or "").split(",")]
    if len(parts) != 2 or not all(parts):
        raise ExplorerError(f"{flag} takes two {what} separated by a comma (one for run A, one for run B), "
                            f"got {text!r}.")
    return parts


def parse_number(flag: str, text: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise ExplorerError(f"{flag} must be a number, got {text!r}.") from None


def parse_kinds(text: str) -> list[str]:
    from ..compare import compose

    kinds = [part.strip() for part in (text or "").split(",") if part.strip()]
    unknown = [k for k in kinds if k not in compose.COMPOSABLE]
    if not kinds or unknown:
        raise ExplorerError(f"--kind takes methods whose runs combine ({', '.join(compose.COMPOSABLE)}), "
                            f"got {text!r}.")
    return kinds


def cmd_compose(args) -> None:
    from ..compare import compose

    if args.learn_weights:
        from .learned_mixture import cmd_learn_weights

        cmd_learn_weights(args)
        return
    kinds = parse_kinds(args.kind) if args.kind is not None else None
    mixture_only = [flag for flag, value in (("--target", args.target), ("--shots", args.shots),
                                             ("--iterations", args.iterations)) if value is not None]
    if mixture_only:
        raise ExplorerError(f"{', '.join(mixture_only)} go with --learn-weights.")
    if args.demo_runs:
        extra = [flag for flag, value in (("--runs", args.run_ids), ("--how", args.how), ("--weights", args.weights),
                                          ("--density", args.density), ("--examples", args.examples),
                                          ("--max-new-tokens", args.max_new_tokens)) if value is not None]
        if extra:
            raise ExplorerError(f"--demo-runs only trains (or finds) the demo runs: drop {', '.join(extra)}.")
        steps = parse_whole("--steps", args.steps) if args.steps is not None else 25

        def on_event(event):
            if event["event"] == "demo_run":
                print(f"{event['name']}: {event['state']} {event['run_id']}"
                      + (f" ({event['error']})" if event.get("error") else ""), file=sys.stderr)
            elif event["event"] == "step":
                print(f"{event['demo_run']} step {event['step']}/{steps}: loss {event['loss']:.4f}", file=sys.stderr)
            elif event["event"] == "score":
                print(f"{event['demo_run']} task score ({event['which']}): {event['score']:.3f}", file=sys.stderr)

        found = compose.ensure_demo_runs(args.model or compose.BUNDLED, steps, on_event=on_event, methods=kinds)
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            for name, run_id in found.items():
                print(f"{name:<14} {run_id}")
        return
    extra = [flag for flag, value in (("--model", args.model), ("--steps", args.steps)) if value is not None]
    if extra:
        raise ExplorerError(f"{', '.join(extra)} go with --demo-runs (the runs to compose already name their model).")
    if kinds is not None and len(kinds) != 1:
        raise ExplorerError("With --runs, --kind names the one method both runs use (e.g. --kind prefix).")
    how = args.how.strip() if args.how is not None else (compose.COMPOSABLE[kinds[0]].combinations[0] if kinds else None)
    if args.run_ids is None or how is None:
        ways = "; ".join(f"{', '.join(m.combinations)} for {m.title_in_sentence} runs" for m in compose.COMPOSABLE.values())
        raise ExplorerError(f"compose needs --runs A,B and --how ({ways}), or --demo-runs.")
    run_a, run_b = parse_pair("--runs", args.run_ids, "run ids")
    if kinds is not None:
        for label, run_id in (("A", run_a), ("B", run_b)):
            run = runs.open_run(run_id)
            if run.method.name != kinds[0]:
                raise ExplorerError(f"--kind {kinds[0]}, but run {label} ({run.run_id}) is a "
                                    f"{run.method.title_in_sentence} run.")
    weights = (1.0, 1.0)
    if args.weights is not None:
        texts = parse_pair("--weights", args.weights, "numbers")
        try:
            weights = tuple(float(text) for text in texts)
        except ValueError:
            raise ExplorerError(f"--weights takes two numbers separated by a comma (one for run A, one for run B), "
                                f"got {args.weights!r}.") from None
    density = parse_number("--density", args.density) if args.density is not None else None
    examples = parse_whole("--examples", args.examples) if args.examples is not None else 8
    max_new_tokens = parse_whole("--max-new-tokens", args.max_new_tokens) if args.max_new_tokens is not None else 32
    result = compose.compose(run_a, run_b, how, weights, examples=examples, max_new_tokens=max_new_tokens,
                             density=density)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    w = result["weights"]
    unique = list(dict.fromkeys(result["datasets"]))
    counts = ", ".join(str(n) for n in dict.fromkeys(result["examples"].values()))
    title = METHODS[result["method"]].title
    print(f"{title} composition ({result['how']}, weights {w[0]:g} and {w[1]:g}) "
          f"on {result['model']}, {counts} held-out examples per dataset")
    labels = {"A": f"A {result['runs'][0]}", "B": f"B {result['runs'][1]}", "combined": "combined"}
    first = max(len(label) for label in labels.values())
    widths = [max(len(d), 6) for d in unique]
    print(f"{'':<{first}}  " + "  ".join(f"{d:>{width}}" for d, width in zip(unique, widths)))
    for variant, label in labels.items():
        cells = [result["scores"][variant][d] for d in unique]
        print(f"{label:<{first}}  " + "  ".join(f"{'-' if c is None else format(c, '.2f'):>{width}}"
                                              for c, width in zip(cells, widths)))
    print("interference (combined minus own adapter): " + ", ".join(
        f"{d} {'n/a' if v is None else format(v, '+.2f')}" for d, v in result["interference"].items()))
    print(result["summary"])


def add_parsers(sub) -> None:
    from ..learn.recommend import GOALS, SCENARIOS

    p = sub.add_parser("recommend", help="which fine-tuning method suits a job, its settings and the reasons")
    p.add_argument("--model", help="base model: a catalog name (llama-2-70b), a runnable model or a config.json "
                   "path (default smollm2-1.7b)")
    p.add_argument("--memory-gb", dest="memory_gb", help="accelerator memory in GB, counted as GiB (default 24)")
    p.add_argument("--examples", help="number of training examples (default 5000)")
    p.add_argument("--goal", help="; ".join(f"{k} = {v}" for k, v in GOALS.items()) + " (default style)")
    p.add_argument("--latency-sensitive", dest="latency_sensitive", action="store_true",
                   help="serving latency matters: prefer methods that merge into the weights")
    p.add_argument("--many-adapters", dest="many_adapters", action="store_true",
                   help="many fine-tunes will be served from one shared base model")
    p.add_argument("--scenario", help="run one of the textbook section's worked scenarios instead: " + ", ".join(SCENARIOS))
    p.add_argument("--list-scenarios", action="store_true", help="list the textbook section's scenarios")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_recommend)

    p = sub.add_parser("compose", help="combine two LoRA, prompt-tuning or prefix-tuning runs and score all three on "
                                       "both tasks; or learn a LoRA mixture's weights (--learn-weights)")
    p.add_argument("--runs", dest="run_ids", metavar="A,B", help="two run ids, separated by a comma (with "
                   "--learn-weights: two or more)")
    p.add_argument("--how", help="linear, cat, ties, svd, dare_linear, dare_ties or magnitude_prune for LoRA runs; "
                   "concat for prompt-tuning runs; kv_concat for prefix-tuning runs")
    p.add_argument("--kind", help="the method of the runs (lora, prompt, prefix): with --runs, its first way to "
                   "combine is the default --how; with --demo-runs, which methods' demo runs (comma-separated)")
    p.add_argument("--weights", metavar="WA,WB", help="weights of run A and run B, from -2 to 2 (default 1,1)")
    p.add_argument("--density", help="share of entries ties, dare_linear, dare_ties and magnitude_prune keep "
                   "(above 0, at most 1; default 0.5)")
    p.add_argument("--examples", help="held-out examples scored per dataset, 1 to 64 (default 8); with "
                   "--learn-weights: the example rows (a JSONL/CSV file, or a bundled task's first rows)")
    p.add_argument("--max-new-tokens", help="tokens generated per reply (default 32)")
    p.add_argument("--demo-runs", action="store_true", help="instead: train (or reuse) the demo runs, each "
                   "composable method on pirate and french (or the --kind methods), and print their run ids")
    p.add_argument("--model", help="with --demo-runs: the runnable model to train on (default smollm2-135m-instruct)")
    p.add_argument("--steps", help="with --demo-runs: optimizer steps per run (default 25)")
    p.add_argument("--learn-weights", action="store_true", help="instead: search the weights of a mixture of the "
                   "LoRA --runs that minimise the loss on the --examples rows (CMA-ES, no gradients)")
    p.add_argument("--target", help="with --learn-weights: the task whose held-out rows score the mixture (default: "
                   "--examples when it names a bundled task)")
    p.add_argument("--shots", help="with --learn-weights: example rows used, 1 to 32 (default 8)")
    p.add_argument("--iterations", help="with --learn-weights: CMA-ES generations, 1 to 100 (default 8)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_compose)
