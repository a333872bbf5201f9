"""GGUF export: a merged tiny-model run written at f16 and q8_0 and read back by transformers' own GGUF loader
(weights, tokenizer, chat template, greedy replies); Qwen2 and Mistral too; uncovered architectures refused."""

import copy
import json

import pytest
import torch

from explorer.cli.main import main
from explorer.compare import gguf, variants
from explorer.data import chat
from explorer.errors import ExplorerError

from conftest import TINY, train_run

PROMPTS = ["Where is the treasure?", "What is the capital of France?", "Say hello."]
Q8_TOLERANCE = 0.1  # q8_0: root-mean-square logit difference against the merged model, as a share of the
# logits' standard deviation (measured 0.05-0.06 on the tiny random model, 0.034-0.037 on the bundled SmolLM2)


def read_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def read_back(path):
    """The model and the tokenizer as transformers reads them from the file. Parsing a 49k-token vocabulary out
    of GGUF takes gguf-py about 9 s per read: tests that need only the weights read only the model."""
    from transformers import AutoTokenizer

    return read_model(path), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def greedy(model, tokenizer, prompt: str, tokens: int = 12) -> list[int]:
    ids = torch.tensor([chat.prompt_ids(tokenizer, prompt)])
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                              pad_token_id=chat.pad_id(tokenizer))[0].tolist()


@pytest.fixture(scope="module")
def merged_run(cache):
    run_id = train_run("lora", options={"r": 4}, steps=3, learning_rate=0.01)
    return run_id, variants.session(run_id)


def test_f16_reads_back_as_the_merged_model_at_f16_with_the_same_logits_and_greedy_replies(merged_run, tmp_path):
    run_id, session = merged_run
    path = gguf.export_run(run_id, "f16", tmp_path / "m.gguf")
    model, tokenizer = read_back(path)
    merged = session.merged.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, merged[name].half().float()), name  # exactly f16 rounding, q/k un-permuted
    assert tokenizer.chat_template == session.tokenizer.chat_template
    at_f16 = copy.deepcopy(session.merged)  # the merged model at f16 precision, computed in f32 as the file is read
    with torch.no_grad():
        for tensor in at_f16.parameters():
            tensor.copy_(tensor.half().float())
    for prompt in PROMPTS:
        assert chat.prompt_ids(tokenizer, prompt) == chat.prompt_ids(session.tokenizer, prompt)
        assert greedy(model, tokenizer, prompt, 40) == greedy(at_f16, session.tokenizer, prompt, 40)
        ids = torch.tensor([chat.prompt_ids(tokenizer, prompt)])
        with torch.no_grad():
            assert torch.equal(model(ids).logits, at_f16(ids).logits)


def test_q8_0_holds_exactly_the_q8_0_blocks_and_stays_within_the_logit_tolerance(merged_run, tmp_path):
    import gguf as gguf_py

    run_id, session = merged_run
    path = gguf.export_run(run_id, "q8_0", tmp_path / "m.gguf")
    assert path.stat().st_size < gguf.export_run(run_id, "f16", tmp_path / "f.gguf").stat().st_size
    model = read_model(path)
    q8 = gguf_py.GGMLQuantizationType.Q8_0
    expected = copy.deepcopy(session.merged)  # every matrix through llama.cpp's Q8_0 blocks, the rest in f32
    with torch.no_grad():
        for tensor in expected.parameters():
            if tensor.dim() == 2:
                blocks = gguf_py.quants.quantize(tensor.numpy(), q8)
                tensor.copy_(torch.from_numpy(gguf_py.quants.dequantize(blocks, q8).reshape(tensor.shape)))
    for prompt in PROMPTS:
        ids = torch.tensor([chat.prompt_ids(session.tokenizer, prompt)])
        with torch.no_grad():
            got, want = model(ids).logits, session.merged(ids).logits
            assert torch.equal(got, expected(ids).logits), "the file holds exactly the Q8_0 blocks"
        assert (got - want).pow(2).mean().sqrt() <= Q8_TOLERANCE * want.std(), prompt


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_qwen2_and_mistral_read_back_too(kind, cache, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cache / TINY)
    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=512, tie_word_embeddings=False,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    # A neutral name: transformers' reader maps a llama file named "...mistral..." to a gguf architecture that
    # gguf-py 0.19 no longer has (llama.cpp reads it either way).
    # The weights only: the tokenizer's way through GGUF is the architecture-independent part, read back in
    # the f16 test above.
    back = read_model(gguf.write(model, tokenizer, tmp_path / "tiny.gguf", "f16", "tiny-test"))
    state = model.state_dict()
    assert back.state_dict().keys() == state.keys()
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, state[name].half().float()), name
    assert greedy(back, tokenizer, PROMPTS[0]) == greedy(model, tokenizer, PROMPTS[0])


def test_what_gguf_cannot_hold_is_refused_with_one_line(cache, tmp_path):
    from transformers import GPT2Config

    with pytest.raises(ExplorerError, match="GGUF export covers Llama .*Mistral and Qwen2.*'gpt2'"):
        gguf.covers(GPT2Config())
    prompt_run = train_run("prompt", options={"num_virtual_tokens": 4})
    with pytest.raises(ExplorerError, match="cannot merge"):
        gguf.export_run(prompt_run, "f16", tmp_path / "p.gguf")
    assert not list(tmp_path.iterdir())


def test_the_command_line_writes_gguf_and_the_modelfile_beside_it(merged_run, tmp_path, capsys):
    import gguf as gguf_py

    from explorer.compare import modelfile, ollama_render

    run_id, session = merged_run
    assert main(["gguf", "--run", run_id, "--out", str(tmp_path / "x.gguf"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "q8_0"  # the default
    assert out["path"] == str(tmp_path / "x.gguf") and out["bytes"] == (tmp_path / "x.gguf").stat().st_size
    assert out["modelfile"] == str(tmp_path / "x.Modelfile")
    assert out["commands"] == ["ollama create x -f x.Modelfile", "ollama run x", "llama-cli -m x.gguf -cnv --jinja"]
    written = ollama_render.read_modelfile((tmp_path / "x.Modelfile").read_text())
    assert written["from"] == "./x.gguf" and written["stop"] == ["<|im_end|>"]
    assert written["system"] == out["system"] == modelfile.chat_format(session.tokenizer).default_system  # pirate
    question = [{"role": "user", "content": PROMPTS[0]}]  # has no system message: the template's default
    assert ollama_render.ollama_prompt(written["template"], written["system"], question) == \
        session.tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    fields = gguf_py.GGUFReader(str(tmp_path / "x.gguf")).fields
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # as SmolLM2's tokenizer encodes
    assert fields["tokenizer.chat_template"].contents() == session.tokenizer.chat_template
    assert (tmp_path / "x.gguf").stat().st_mode & 0o777 == 0o644
