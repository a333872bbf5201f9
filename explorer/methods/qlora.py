"""QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs").

LoRA on a base whose linear layers are stored in 4-bit NormalFloat (bitsandbytes). Trainable
parameters are LoRA's; what changes is the memory of the frozen base (see explorer.memory).
"""

from dataclasses import dataclass, replace

from ..options import option
from .base import Method
from .lora import LoraOptions, apply_lora, lora_adaptation, lora_terms, resolve_match


@dataclass
class QLoraOptions(LoraOptions):
    bnb_4bit_use_double_quant: bool = option(True, "Double quantization: quantize the per-block scales too "
                                             "(saves about 0.37 bits per parameter).")
    bnb_4bit_compute_dtype: str = option("auto", "Precision the 4-bit weights are de-quantized to for each "
                                         "matmul; auto: bfloat16 on a GPU that computes it (the paper's), "
                                         "float16 on older GPUs, float32 on a CPU.",
                                         choices=("auto", "bfloat16", "float16", "float32"))


def compute_dtype(options, device: str) -> str:
    """The matmul precision on ``device``. A CPU without bfloat16 instructions emulates bfloat16 matmuls:
    measured on this project's 2-core AVX2 machine (bundled model, 4 steps of batch 4 x 96 tokens),
    6.0 tokens/s in bfloat16 against 62.6 in float32. The weights stay 4-bit either way."""
    if options.bnb_4bit_compute_dtype != "auto":
        return options.bnb_4bit_compute_dtype
    import torch

    if not device.startswith("cuda"):
        return "float32"
    # A recipe is written here for someone else's GPU: the paper's bfloat16. Pre-Ampere GPUs lack it: float16.
    return "bfloat16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "float16"


def quantization_config(options, device: str):
    """The bitsandbytes settings a real QLoRA load uses on ``device`` (NF4, as in the paper)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=options.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype(options, device)))


def adaptation(spec, options):
    return replace(lora_adaptation(spec, options), quantized_base=True,
                   double_quant=options.bnb_4bit_use_double_quant)


def load_kwargs(options, device: str) -> dict:
    """from_pretrained arguments of a QLoRA base: quantized while loading, placed whole on ``device``."""
    return {"quantization_config": quantization_config(options, device), "device_map": {"": device}}


def after_load(model) -> None:
    use_portable_cpu_kernels(model)
    release_file_mapping(model)


def use_portable_cpu_kernels(model) -> None:
    """Keep bitsandbytes' portable CPU path for 4-bit layers in eval mode.

    On CPUs with AVX512-BF16, bitsandbytes repacks each 4-bit weight on its first eval-mode forward for
    a special kernel. Measured here (SmolLM2-135M, 30 tokens): the repacking takes 5.8 s and the packed
    forward then takes 0.41 s against 0.17 s on the portable path; layers narrower than its 64-input
    blocks (the tiny test model's) crash. The portable path also gives the same numbers on every CPU."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def release_file_mapping(model) -> None:
    """Copy the tensors QLoRA leaves un-quantized (embeddings, norms) out of the checkpoint's memory map.

    transformers memory-maps the safetensors file, and the embeddings and norms of a 4-bit load stay
    views into it. The mapping covers the whole float file, and every page quantization read stays
    resident while any view is alive: measured on the bundled model, 430 MiB of file pages beside
    158 MiB of model, which would make QLoRA look twice its size. A copy frees the mapping."""
    import gc

    import torch

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.device.type == "cpu" and type(tensor).__name__ != "Params4bit":
                tensor.data = tensor.data.clone()
    gc.collect()


METHOD = Method(
    name="qlora", title="QLoRA", where="linear weights (LoRA) on a 4-bit quantized frozen base",
    explanation="LoRA, with the frozen base stored in 4-bit NF4 and de-quantized on the fly for each "
                "matmul: the base takes about a quarter of its bf16 memory. LoftQ (PEFT's initialisation that "
                "picks the 4-bit base and B·A together so that their sum approximates W) is not offered: PEFT "
                "0.21.2 computes it on a GPU only (NVIDIA or Intel; the reason: "
                "https://github.com/huggingface/peft/blob/v0.21.2/src/peft/utils/loftq_utils.py#L70), and this "
                "app trains on CPUs.",
    when_to_use="When the model does not fit in memory for LoRA: a 70B model fine-tunes on one 48 GB GPU.",
    default_lr=1e-3, options_type=QLoraOptions, mergeable=True,
    merge_reason="Merges like LoRA into the de-quantized base; merging into the 4-bit weights themselves "
                 "re-rounds them (the Compare tab shows the difference).",
    uses_peft=True, terms=lora_terms, adaptation=adaptation,
    apply=lambda model, spec, options: apply_lora(model, spec, options),
    validate=lambda spec, options: resolve_match(spec.arch, options), textbook="lora", family="lora",
    peft_type="LORA", quantized_base=True, load_kwargs=load_kwargs, after_load=after_load, mixed_batch=True,
    strength=True)
