"""PEFT Explorer's command line.

Usage:
    python -m explorer provision                 # convert the bundled model, build the tiny one
    python -m explorer models [--json]           # list runnable models
    python -m explorer generate --model NAME --prompt TEXT [--max-new-tokens N] [--json]
    python -m explorer calc --model MODEL --method METHOD [--set KEY=VALUE ...] [--json]

Errors print one line to stderr and exit with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import settings
from .errors import ExplorerError


def cmd_provision(args) -> None:
    from . import provision

    for folder in provision.ensure_all(settings.models_cache()):
        print(f"ready: {folder}")


def cmd_models(args) -> None:
    from . import models

    rows = [models.describe(entry) for entry in models.registry().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        params = f"{row['parameters']:,}" if row["parameters"] else "?"
        print(f"{row['name']:<28} {row['architecture']:<22} {params:>14} params  {row['stored_at']}")


def cmd_generate(args) -> None:
    from . import generate, models

    generate.check_prompt(args.prompt)  # fail fast, before loading anything
    generate.check_max_new_tokens(args.max_new_tokens)
    loaded = models.load(args.model)
    result = generate.generate(loaded, args.prompt, args.max_new_tokens)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.completion)
        print(f"[{result.new_tokens} tokens in {result.seconds:.2f} s, "
              f"{result.tokens_per_second:.1f} tokens/s]", file=sys.stderr)


def cmd_calc(args) -> None:
    from . import calculator

    values = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ExplorerError(f"--set takes KEY=VALUE, got {item!r}.")
        values[key.strip()] = value
    result = calculator.from_request(args.model, args.method, values)
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
    f = out["flops"]
    print(f"FLOPs/token: base forward {f['base_forward_per_token']:.4g}, training {f['train_per_token']:.4g}, "
          f"inference overhead unmerged {f['inference_overhead_per_token_unmerged']:.4g}, "
          f"merged {f['inference_overhead_per_token_merged']:.4g}")
    print(f"merges: {'yes' if out['mergeable'] else 'no'} ({out['merge_reason']})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description="PEFT Explorer command line")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("provision", help="convert the bundled model and build the tiny test model").set_defaults(run=cmd_provision)

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
                   help="an option (PEFT's names: r, lora_alpha, target_modules=q_proj,v_proj, num_virtual_tokens, "
                        "use_dora, ...; bottleneck_dim, num_classes) or a setting (batch_size, seq_len, precision, "
                        "optimizer, gradient_checkpointing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_calc)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ExplorerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
