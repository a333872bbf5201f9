"""``serve-many``: several LoRA runs answered by one base in one mixed batch, with measured memory and speed.

Usage:
    python -m explorer serve-many --runs ID,ID[,...] --prompt TEXT [--prompt TEXT ...] [--max-new-tokens N]
                                  [--new-tokens N] [--repeats N] [--large-model NAME] [--no-measure] [--json]
"""

from __future__ import annotations

import json

from ..errors import ExplorerError
from ..options import whole as parse_whole

GIB, MIB = 2 ** 30, 2 ** 20


def cmd_serve_many(args) -> None:
    from ..compare import serve_many

    if args.run_ids is None:
        raise ExplorerError("serve-many needs --runs ID,ID[,...]: finished LoRA runs on one base model.")
    if not args.prompt:
        raise ExplorerError("serve-many needs --prompt TEXT (repeat it for several prompts).")
    result = serve_many.serve(
        args.run_ids, args.prompt,
        max_new_tokens=parse_whole("--max-new-tokens", args.max_new_tokens) if args.max_new_tokens else 32,
        measure_costs=not args.no_measure,
        new_tokens=parse_whole("--new-tokens", args.new_tokens) if args.new_tokens else 16,
        repeats=parse_whole("--repeats", args.repeats) if args.repeats else 3,
        large_model=args.large_model or "llama-2-70b")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"one base ({result['model']}), {len(result['runs'])} adapter(s), one batch of {result['batch_rows']} rows")
    for i, prompt in enumerate(result["prompts"]):
        print(f"\nprompt: {prompt}")
        for label, replies in result["replies"].items():
            same = "" if result["greedy_match"][label] else "  [differs from its own reply]"
            print(f"  {label}: {replies[i]}{same}")
    diffs = result["max_abs_logit_diff"]
    print("\nmixed batch = each adapter alone: greedy " +
          ("identical for all" if all(result["greedy_match"].values()) else "NOT identical") +
          f"; largest logit difference {max(diffs.values()):.2g}")
    memory, speed = result["memory"], result["throughput"]
    if memory:
        print(f"memory (measured tensors): base + {len(result['runs'])} adapters "
              f"{memory['shared_base_and_adapters_bytes'] / MIB:,.1f} MiB; {len(result['runs'])} merged copies "
              f"{memory['merged_copies_bytes'] / MIB:,.1f} MiB ({memory['ratio_merged_to_shared']:.2f}x)")
    if speed:
        tps = speed["tokens_per_second"]
        print(f"throughput ({speed['requests']} requests x {speed['new_tokens_per_request']} tokens, median of "
              f"{speed['repeats']}, {speed['device']}): mixed batch {tps['mixed_batch']:.1f} tokens/s, merged "
              f"models in turn {tps['merged_in_turn']:.1f}, swapping adapters per request "
              f"{tps['swap_per_request']:.1f}")
    figures = result["calculator"]
    if figures:
        print(f"Calculator, {figures['model']} ({figures['adapter_trainable_params']:,} adapter parameters, "
              f"{figures['adapter_bytes'] / MIB:,.0f} MiB each in float32):")
        print(f"  {'adapters':>8}  {'4-bit base + adapters':>22}  {'bf16 base + adapters':>21}  {'merged bf16 copies':>19}")
        for row in figures["rows"]:
            print(f"  {row['adapters']:>8,}  {row['base_4bit_plus_adapters_bytes'] / GIB:>18,.1f} GiB  "
                  f"{row['base_bf16_plus_adapters_bytes'] / GIB:>17,.1f} GiB  {row['merged_bf16_copies_bytes'] / GIB:>15,.0f} GiB")
    print(result["summary"])


def add_parser(sub) -> None:
    p = sub.add_parser("serve-many", help="several LoRA runs answered by one base in one mixed batch; memory and "
                                          "throughput against merged copies and adapter swapping")
    p.add_argument("--runs", dest="run_ids", metavar="ID,ID[,...]", help="finished LoRA or QLoRA runs on one base")
    p.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    p.add_argument("--max-new-tokens", help="tokens per reply (default 32)")
    p.add_argument("--new-tokens", help="tokens per request when timing (default 16)")
    p.add_argument("--repeats", help="timings per way of serving; the median is reported (default 3)")
    p.add_argument("--large-model", help="catalog model for the Calculator's figures up to 1,000 adapters "
                                         "(default llama-2-70b)")
    p.add_argument("--no-measure", action="store_true", help="replies and checks only: skip memory and timing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_serve_many)
