"""``dial``: how much general knowledge a LoRA run gets back for how much of its task, at several adapter
strengths and PEFT intruder-dimension settings (explorer.compare.forgetting_dial).

Usage:
    python -m explorer dial --run RUN_ID [--strengths 0,0.25,0.5,0.75,1] [--intruder 1,0.5,0] [--examples N]
                            [--probe N] [--max-new-tokens N] [--json]
"""

from __future__ import annotations

import json

from .learn import parse_whole


def cmd_dial(args) -> None:
    from ..compare import forgetting_dial
    from ..errors import ExplorerError

    if not args.run_id:
        raise ExplorerError("dial needs --run RUN_ID: a finished LoRA-family run.")
    result = forgetting_dial.dial(
        args.run_id, args.strengths, args.intruder or "",
        examples=parse_whole("--examples", args.examples), probe_count=parse_whole("--probe", args.probe),
        max_new_tokens=parse_whole("--max-new-tokens", args.max_new_tokens))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    if result["intruder_note"]:
        print(result["intruder_note"])
    n = result["probe_count"]
    print(f"run {result['run_id']} ({result['method']} on {result['model']}, {result['dataset']}): greedy, "
          f"{result['examples']} held-out rows ({result['task']} score), {n} general questions, "
          f"{result['max_new_tokens']} new tokens")
    print(f"  {'setting':<18} {'task score':>10} {'general questions':>18}")
    print(f"  {'base model':<18} {result['base']['task_score']:>10.2f} {result['base']['probe_right']:>11} of {n}")
    for p in result["points"]:
        extra = (f"  ({p['layers_with_intruders']} of {p['lora_layers']} LoRA layers had intruders)"
                 if p["kind"] == "intruder" else "")
        print(f"  {p['setting']:<18} {p['task_score']:>10.2f} {p['probe_right']:>11} of {n}{extra}")
    print(result["reading"])


def add_parser(sub) -> None:
    p = sub.add_parser("dial", help="forgetting you can dial back: task and probe scores of a LoRA run at "
                                    "several adapter strengths and intruder-dimension settings")
    p.add_argument("--run", dest="run_id", metavar="RUN_ID", help="a finished LoRA-family run")
    p.add_argument("--strengths", default="0,0.25,0.5,0.75,1",
                   help="adapter strengths from 0 (base) to 1 (trained); 1 is always measured "
                        "(default 0,0.25,0.5,0.75,1)")
    p.add_argument("--intruder", help="PEFT reduce_intruder_dimension mitigation_lambda values, from 0 (intruder "
                                      "directions removed) to 1 (unchanged), e.g. 1,0.5,0 (default: none)")
    p.add_argument("--examples", default="4", help="held-out rows scored at each setting (default 4)")
    p.add_argument("--probe", default="10", help="forgetting-probe questions at each setting (default 10)")
    p.add_argument("--max-new-tokens", default="16", help="tokens per reply (default 16)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_dial)
