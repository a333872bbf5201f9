"""bitsandbytes' notice about the `kernels` package: silenced at import (explorer/__init__.py), because the kernel
it names never runs here: QLoRA's 4-bit layers take the portable CPU path, which needs no `kernels` package."""

import logging
import subprocess
import sys

import torch

from explorer import settings
from explorer.methods import qlora

NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


def test_a_command_that_imports_peft_starts_without_the_kernels_notice():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "explorer", "calc", "--model", "gpt2",
                           "--method", "lora", "--json"], cwd=settings.REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"peft", "bitsandbytes"} <= imported, "the command imports bitsandbytes (through PEFT)"
    printed = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert not any(NOTICE in line or "pip install kernels" in line for line in printed), printed


def test_only_that_notice_is_dropped(caplog):
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning(NOTICE + ": %s. Please make sure you already `pip install kernels`", "No module named 'kernels'")
        logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


def test_4bit_layers_compute_on_the_portable_path_without_the_kernel(monkeypatch):
    """The kernels-community kernel serves bitsandbytes.functional.gemv_4bit on weights repacked for AVX512-BF16
    only; after QLoRA's load hook that path is never taken, and the layer computes x @ dequantize(W)^T."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    def packed_path(*args, **kwargs):
        raise AssertionError("the repacked AVX512-BF16 path (where the kernels package would apply) was taken")

    monkeypatch.setattr(bnb.functional, "gemv_4bit", packed_path)
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 128), requires_grad=False, quant_type="nf4")
    model = torch.nn.Sequential(layer.to("cpu")).eval()
    qlora.use_portable_cpu_kernels(model)
    x = torch.randn(3, 128)
    with torch.no_grad():
        out = model(x)
    expected = x @ dequantize_4bit(layer.weight.data, layer.weight.quant_state).T
    assert out.shape == (3, 64) and torch.equal(out, expected)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
