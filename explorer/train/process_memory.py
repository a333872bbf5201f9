"""A CPU training process's runtime baseline: what it holds besides the model's own tensors when training starts.

On CPU the measured peak is the process's peak resident memory (explorer.train.loop.peak_memory_bytes): Python,
torch, transformers, the tokenizer and the encoded data are in it, and so is what glibc's allocator kept from
loading and scoring the base model, beside the tensors the Calculator counts. Measured with the tiny model
(2026-12-07, VmRSS): 221 MB after the app's imports, 380 MB once transformers, the model's class and its
tokenizer were loaded, 460 MB when training started (6 MB of it the model); a runtime measured before the load
left LoRA's prediction 14% low. So the baseline is taken where the measured peak starts: at the start of
training, after the same collection and trim as explorer.train.loop.reset_peak_memory, less the bytes of the
model's own tensors (the Calculator's weights and trainable weights). Weights mapped lazily from safetensors are
resident only once read, so each page of them is read first (what the first step does anyway).
"""

from __future__ import annotations

import ctypes
import gc


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux VmRSS), or None where /proc offers none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def model_tensors(model) -> list:
    """The model's parameters and buffers, each storage once (tied weights share one)."""
    seen, tensors = set(), []
    for tensor in [*model.parameters(), *model.buffers()]:
        key = (tensor.data_ptr(), tensor.numel())
        if tensor.device.type == "meta" or key in seen:
            continue
        seen.add(key)
        tensors.append(tensor)
    return tensors


def tensor_bytes(tensors: list) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def read_every_page(tensors: list) -> None:
    """One element per 4 KiB page of each tensor, so that weights mapped from a file are resident."""
    import torch

    with torch.no_grad():
        for tensor in tensors:
            flat = tensor.detach().reshape(-1) if tensor.is_contiguous() else tensor.detach().contiguous().reshape(-1)
            if flat.numel():
                flat[::max(1, 4096 // flat.element_size())].to(torch.float32).sum()


def trim() -> None:
    gc.collect()
    try:  # as reset_peak_memory does: freed memory goes back to the system before the peak is reset
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def runtime_baseline_bytes(model, device: str) -> int:
    """The process's resident memory less the model's tensors, at the start of training; 0 on CUDA (torch's max
    allocated counts tensors only) and where resident memory cannot be read."""
    if device == "cuda":
        return 0
    tensors = model_tensors(model)
    read_every_page(tensors)
    trim()
    resident = resident_bytes()
    if resident is None:
        return 0
    return max(0, resident - tensor_bytes(tensors))
