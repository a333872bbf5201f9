"""PEFT Explorer's command line.

Usage:
    python -m explorer provision                 # convert the bundled model, build the tiny one
    python -m explorer models [--json]           # list runnable models
    python -m explorer generate --model NAME --prompt TEXT [--max-new-tokens N] [--json]

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
