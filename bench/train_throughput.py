"""The app's training loop against a plain PEFT + torch loop, measured in the same run.

Usage: python bench/train_throughput.py [--steps 8] [--method lora]

Both loops train the bundled SmolLM2 with the same method, data (the pirate set, encoded by
explorer.data), batch and optimizer. Prints tokens/s of each and their ratio (target: app / plain
>= 0.95), and the model FLOP utilisation (FLOPs from explorer.flops, exact for this model) against
a float32 matmul peak measured in the same run.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from explorer.costs import specs  # noqa: E402
from explorer.costs.flops import count_flops  # noqa: E402
from explorer.data import chat, sources  # noqa: E402
from explorer.methods import METHODS  # noqa: E402
from explorer.models import provision  # noqa: E402
from explorer.train import loop as training  # noqa: E402


def matmul_peak(seconds: float = 3.0, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start)


def plain_loop(method: str, steps: int, batch_size: int, seq_len: int, lr: float) -> float:
    """What a user would write by hand with PEFT and torch: tokens per second of training steps."""
    torch.manual_seed(0)
    cfg = training.TrainConfig(model=provision.BUNDLED_NAME, method=method)
    prep = training.prepare(cfg, {})
    model = METHODS[method].apply(prep.model, prep.spec, prep.options)
    model.train()
    tok = prep.tokenizer
    encoded, _ = chat.encode_dataset(tok, sources.load_dataset("pirate")[0], seq_len)
    stream = training.batches(encoded, batch_size, tok.pad_token_id, 0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    tokens, seconds = 0, 0.0
    for _ in range(steps):
        batch = next(stream)
        start = time.perf_counter()
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - start
        tokens += int(batch["attention_mask"].sum())
    return tokens / seconds


def app_loop(method: str, steps: int, batch_size: int, seq_len: int) -> tuple[float, float]:
    cfg = training.TrainConfig(model=provision.BUNDLED_NAME, method=method, steps=steps, batch_size=batch_size,
                               seq_len=seq_len, eval_examples=0, eval_every=10 ** 6)
    with tempfile.TemporaryDirectory() as folder:
        summary = training.train(cfg, {}, Path(folder))
    return summary["tokens_per_second"], cfg.learning_rate or METHODS[method].default_lr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=96)
    args = parser.parse_args()
    peak = matmul_peak()
    app, lr = app_loop(args.method, args.steps, args.batch_size, args.seq_len)
    plain = plain_loop(args.method, args.steps, args.batch_size, args.seq_len, lr)
    spec = specs.resolve(provision.BUNDLED_NAME)
    adaptation = METHODS[args.method].adaptation(spec, METHODS[args.method].parse_options({}))
    forward, backward = count_flops(spec.arch, adaptation, 70)  # ~70 tokens: the pirate set's typical length
    per_token = (forward + backward) / 70
    print(f"method {args.method}, {args.steps} steps, batch {args.batch_size}, threads {torch.get_num_threads()}")
    print(f"app loop:   {app:8.1f} tokens/s")
    print(f"plain loop: {plain:8.1f} tokens/s")
    print(f"ratio app / plain: {app / plain:.3f} (target >= 0.95)")
    print(f"matmul peak (fp32, measured now): {peak / 1e9:.1f} GFLOP/s")
    print(f"training FLOPs per token (exact formula): {per_token / 1e9:.3f} GFLOP")
    print(f"model FLOP utilisation: app {app * per_token / peak:.1%}, plain {plain * per_token / peak:.1%}")


if __name__ == "__main__":
    main()
