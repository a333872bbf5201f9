"""GGUF export for llama.cpp, Ollama and LM Studio: a run's merged model, or a runnable model (the bundled
SmolLM2), as one .gguf file at f16 or q8_0.

Written with the gguf package (gguf-py, llama.cpp's own writer), the way llama.cpp's convert_hf_to_gguf.py
writes these architectures:

- tensor names from gguf's TensorNameMap (``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``);
  a tied LM head is left out (llama.cpp and transformers then reuse token_embd);
- llama's q and k projections permuted into llama.cpp's rotary layout (LlamaModel.permute in the converter;
  transformers' GGUF loader permutes them back);
- 1-D tensors (norms, biases) in f32, matrices in f16 or q8_0 (blocks of 32 with one f16 scale; a matrix whose
  rows are not a multiple of 32 stays f16, as the converter does);
- the tokenizer as GPT-2-style BPE: tokens, their types, merges, special token ids and the chat template
  (gguf's SpecialVocab), and whether the runner puts BOS first (as the tokenizer's own encode does). The pre-tokenizer name llama.cpp keys its splitting regex on is taken from the
  bundled SmolLM2 GGUF when the vocabulary is SmolLM2's (provision.find_bundled_gguf), else "default".

explorer.compare.take_home writes an Ollama Modelfile beside the file (explorer.compare.modelfile).

Covered: LlamaForCausalLM (Llama 2 and 3 without rope scaling, SmolLM2, the tiny test model), MistralForCausalLM
(written as llama, as the converter does; sliding windows are not recorded) and Qwen2ForCausalLM. Any other
architecture gets a message naming these. (transformers 5.23's GGUF reader, with gguf 0.19, refuses a llama file
whose name contains "mistral": it maps it to a gguf architecture gguf-py no longer has; llama.cpp reads it.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import modelfile

ARCHITECTURES = {  # transformers model_type -> (gguf MODEL_ARCH name, permute q/k for llama.cpp's rope)
    "llama": ("LLAMA", True),
    "mistral": ("LLAMA", True),
    "qwen2": ("QWEN2", False),
}
TYPES = ("f16", "q8_0")
Q8_BLOCK = 32


def covers(config) -> str:
    """The gguf architecture for this config, or an ExplorerError that says what is covered."""
    kind = getattr(config, "model_type", "")
    if kind not in ARCHITECTURES:
        raise ExplorerError(f"GGUF export covers Llama (and SmolLM2), Mistral and Qwen2 models; this one is "
                            f"'{kind or 'unknown'}'. Use llama.cpp's convert_hf_to_gguf.py on the merged model's "
                            "folder (Compare's export) for other architectures.")
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ExplorerError(f"GGUF export does not write rope scaling ({scaling.get('rope_type', scaling.get('type'))}"
                            "); use llama.cpp's convert_hf_to_gguf.py for this model.")
    return ARCHITECTURES[kind][0]


def permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's rotary layout for q and k rows (convert_hf_to_gguf.py, LlamaModel.permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id with llama.cpp's token types (convert_hf_to_gguf.py, get_vocab_base)."""
    import gguf

    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[index]
        if token in added:
            special = decoder[index].special if index in decoder else False
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def pre_tokenizer(tokens: list[str]) -> str:
    """The bundled GGUF's pre-tokenizer name when the vocabulary is the bundled model's (SmolLM2's)."""
    import gguf

    from ..models import provision

    try:
        reader = gguf.GGUFReader(str(provision.find_bundled_gguf()))
    except (ExplorerError, OSError, ValueError):
        return "default"
    field = reader.fields.get("tokenizer.ggml.tokens")
    same = field is not None and len(field.data) == len(tokens) and all(
        field.contents(i) == tokens[i] for i in (0, 1, 2, len(tokens) // 2, len(tokens) - 1))
    pre = reader.fields.get("tokenizer.ggml.pre")
    return pre.contents() if same and pre is not None else "default"


def write(model, tokenizer, path: Path, qtype: str, name: str) -> Path:
    """The model (a plain transformers causal LM, merged) and its tokenizer as a GGUF file at ``path``."""
    import gguf
    import numpy as np

    if qtype not in TYPES:
        raise ExplorerError(f"GGUF type must be one of {', '.join(TYPES)}, got {qtype!r}.")
    config = model.config
    arch_name = covers(config)
    arch = gguf.MODEL_ARCH[arch_name]
    permutes = ARCHITECTURES[config.model_type][1]
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name_of_tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".gguf")
    os.close(descriptor)
    tmp = Path(name_of_tmp)
    try:
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or
                                        (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(config.vocab_size)
        if permutes:
            writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(writer, tokenizer, config.vocab_size)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for hf_name, tensor in model.state_dict().items():
            if (tied and hf_name == "lm_head.weight") or "rotary_emb" in hf_name:
                continue
            data = tensor.detach().to("cpu").float().numpy()
            if permutes and hf_name.endswith("q_proj.weight"):
                data = permute(data, n_head, n_head)
            elif permutes and hf_name.endswith("k_proj.weight"):
                data = permute(data, n_head, n_kv)
            new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise ExplorerError(f"No GGUF name for the tensor {hf_name} of this {config.model_type} model.")
            if data.ndim < 2:
                writer.add_tensor(new_name, data.astype(np.float32), raw_dtype=gguf.GGMLQuantizationType.F32)
            elif qtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
                quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(new_name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(new_name, data.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from an Ollama service running as its own user
        tmp.replace(path)
    except OSError as error:
        raise ExplorerError(f"Could not write {path} ({error.strerror or error}).") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    import gguf

    if not getattr(tokenizer, "is_fast", False):
        raise ExplorerError("GGUF export needs the model's fast (tokenizer.json) tokenizer.")
    tokens, types = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(tokens))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:  # SpecialVocab reads merges, special ids and template from files
        tokenizer.save_pretrained(folder)
        special = gguf.SpecialVocab(Path(folder), load_merges=True, n_vocab=len(tokens))
        # Whether the runner puts BOS first, said outright: llama.cpp's default when the key is missing depends
        # on the vocabulary type and version. The tokenizer's own encode decides (SmolLM2's adds nothing), so
        # llama.cpp and Ollama tokenise a rendered chat as transformers does (modelfile.chat_format relies on it).
        special.add_special_token["bos"] = modelfile.adds_bos(tokenizer)
        special.add_to_gguf(writer, quiet=True)


def default_path(name: str, qtype: str) -> Path:
    return settings.models_cache() / "gguf" / f"{name}-{qtype}.gguf"


def export_run(run_id: str, qtype: str = "f16", path: Path | None = None) -> Path:
    """A run's merged model (its adapter folded into the base) as GGUF."""
    from . import variants

    session = variants.session(run_id)
    if session.merged is None:
        raise ExplorerError(f"Run {run_id} used {session.run.method.title}, which cannot merge: "
                            f"{session.run.method.merge_reason} GGUF holds plain weights only.")
    covers(session.merged.config)
    with session.lock:
        return write(session.merged, session.tokenizer, path or default_path(f"merged-{run_id}", qtype), qtype,
                     f"merged-{run_id}")
