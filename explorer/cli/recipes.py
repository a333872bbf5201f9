"""Command line: recipes for the user's own GPUs, runs brought back, GGUF export.

    python -m explorer export-recipe --run RUN_ID --dir DIR [--gpus N] [--gpu-memory-gb G]
                                     [--strategy ddp|fsdp|zero3] [--include-model] [--zip] [--json]
    python -m explorer import-run PATH [--model NAME] [--dataset NAME] [--json]
    python -m explorer gguf (--run RUN_ID | --model NAME) [--type q8_0|f16] [--out FILE] [--json]
        (writes FILE and the Ollama Modelfile beside it, FILE's stem + .Modelfile, and prints the commands)
"""

from __future__ import annotations

import json
from pathlib import Path


def cmd_export_recipe(args) -> None:
    from .. import recipes

    folder = recipes.export_run(args.run_id, Path(args.dir), gpus=int(args.gpus), gpu_memory_gb=float(args.gpu_memory_gb),
                                strategy=args.strategy, include_model=args.include_model)
    meta = recipes.read_meta(folder)
    out = {"dir": str(folder), "strategy": meta["strategy"], "gpus": meta["gpus"],
           "launch": f"bash {folder / 'launch.sh'}"}
    if args.zip:
        out["zip"] = str(recipes.zip_folder(folder))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"recipe written to {folder} ({out['strategy']} on {out['gpus']} GPU(s)); run: {out['launch']} "
              f"(see {folder / 'README.md'})")


def cmd_import_run(args) -> None:
    from ..recipes.importing import import_run
    from ..train import runs

    run = runs.read_run(import_run(Path(args.path), model=args.model, dataset=args.dataset))
    out = {"run_id": run.run_id, "run_dir": str(run.folder), "state": run.state, "method": run.config.method,
           "model": run.config.model, "dataset": run.config.dataset, "steps": run.summary.get("steps")}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"imported as run {run.run_id} ({run.config.method} on {run.config.model}); open it in Compare: "
              f"python -m explorer compare --run {run.run_id}")


def cmd_gguf(args) -> None:
    from ..compare import take_home

    out_path = Path(args.out) if args.out else None
    result = (take_home.for_run(args.run_id, args.type, out_path) if args.run_id
              else take_home.for_model(args.model, args.type, out_path))
    out = {**result.as_json(), "type": args.type}
    if args.json:
        print(json.dumps(out))
        return
    print(f"GGUF ({args.type}) written to {result.gguf} ({out['bytes']:,} bytes)")
    if result.modelfile:
        print(f"Ollama Modelfile written beside it: {result.modelfile}")
    print(result.note)
    print(f"Run it (in {result.gguf.parent}):")
    print(take_home.commands_text(result))


def add_parsers(sub) -> None:
    p = sub.add_parser("export-recipe", help="a folder that trains a run again with transformers + PEFT + accelerate "
                                             "on your own GPUs")
    p.add_argument("--run", dest="run_id", required=True)
    p.add_argument("--dir", required=True, help="a new (or empty) folder for the recipe")
    p.add_argument("--gpus", default="1", help="GPUs you will train on (default 1)")
    p.add_argument("--gpu-memory-gb", default="80", help="memory of each GPU in GiB (default 80)")
    p.add_argument("--strategy", choices=("ddp", "fsdp", "zero3"),
                   help="default: the cheapest the Calculator says fits your GPUs")
    p.add_argument("--include-model", action="store_true", help="copy the base model's folder into the recipe")
    p.add_argument("--zip", action="store_true", help="also write DIR.zip")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_export_recipe)

    p = sub.add_parser("import-run", help="bring an adapter trained elsewhere (a recipe's output) in as a run")
    p.add_argument("path", help="a recipe folder, or a PEFT adapter folder")
    p.add_argument("--model", help="the base model (default: the recipe's, or the adapter's base model)")
    p.add_argument("--dataset", help="the dataset its held-out prompts come from (default: the recipe's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_import_run)

    p = sub.add_parser("gguf", help="a run's merged model, or a model, as a GGUF file for llama.cpp and Ollama, "
                                    "with an Ollama Modelfile beside it")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", dest="run_id", help="a run whose adapter merges into its base")
    which.add_argument("--model", help="a runnable model (e.g. the bundled smollm2-135m-instruct)")
    p.add_argument("--type", default="q8_0", choices=("f16", "q8_0"), help="default q8_0")
    p.add_argument("--out", help="the .gguf file (default: models_cache/gguf/<name>-<type>.gguf); the Modelfile "
                                 "is written beside it as <name>.Modelfile")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_gguf)
