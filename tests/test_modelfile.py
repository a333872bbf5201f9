"""The Ollama Modelfile: its TEMPLATE, rendered for a conversation as Ollama renders it (SYSTEM first when the
conversation has none, then the Go template), gives exactly the string the tokenizer's chat template gives;
other chat formats (Llama 3, per-role Zephyr) too; templates that cannot be expressed are refused in one line.
No GGUF here (tests/test_gguf.py writes the file and the Modelfile beside it)."""

import copy

import pytest
from transformers import AutoTokenizer

from explorer.compare import modelfile, ollama_render
from explorer.errors import ExplorerError

from conftest import TINY

SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CONVERSATIONS = [
    [{"role": "user", "content": "What time do you open on Saturdays?"}],
    [{"role": "system", "content": "You answer for Rosie's Bakery."},
     {"role": "user", "content": "Do you sell birthday candles?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi there! How can I help?"},
     {"role": "user", "content": "  Two lines,\nwith edges \n"}],
]
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
          "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
ZEPHYR = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
QA = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '### Question:\n' + m['content'] + '\n\n' }}"
      "{% elif m['role'] == 'system' %}{{ '### Rules:\n' + m['content'] + '\n\n' }}"
      "{% else %}{{ '### Answer:\n' + m['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
      "{% if add_generation_prompt %}{{ '### Answer:\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(cache):
    return AutoTokenizer.from_pretrained(cache / TINY)  # SmolLM2's tokenizer and ChatML template


def with_template(tokenizer, template):
    changed = copy.deepcopy(tokenizer)
    changed.chat_template = template
    return changed


def rendered_by_ollama(text: str, messages) -> str:
    written = ollama_render.read_modelfile(text)
    return ollama_render.ollama_prompt(written["template"], written.get("system"), messages)


def test_smollm2_modelfile_renders_every_conversation_as_its_chat_template(tokenizer):
    text = modelfile.modelfile_text("run-q8_0.gguf", modelfile.chat_format(tokenizer), None)
    written = ollama_render.read_modelfile(text)
    assert written["from"] == "./run-q8_0.gguf"
    assert written["stop"] == ["<|im_end|>"]
    assert written["system"] == SMOLLM_DEFAULT  # the template's own default, which training saw
    assert written["template"] == ("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                                   "{{ end }}<|im_start|>assistant\n")
    for messages in CONVERSATIONS:
        want = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered_by_ollama(text, messages) == want


def test_the_runs_system_prompt_is_the_system_line_and_renders_as_training_saw_it(tokenizer):
    system = "You answer for Rosie's Bakery. Sign off with \"See you soon!\""
    rows = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": q},
                          {"role": "assistant", "content": "Hi there!"}]} for q in ("Open?", "Candles?")]
    assert modelfile.run_system_prompt(rows) == system
    assert modelfile.run_system_prompt([*rows, {"messages": rows[0]["messages"][1:]}]) is None
    text = modelfile.modelfile_text("run-q8_0.gguf", modelfile.chat_format(tokenizer), system)
    assert ollama_render.read_modelfile(text)["system"] == system
    question = [{"role": "user", "content": "When do you open?"}]
    want = tokenizer.apply_chat_template([{"role": "system", "content": system}, *question], tokenize=False,
                                         add_generation_prompt=True)
    assert rendered_by_ollama(text, question) == want


@pytest.mark.parametrize("template, stop", [(LLAMA3, "<|eot_id|>"), (ZEPHYR, "<|im_end|>"), (QA, "<|im_end|>")])
def test_other_chat_formats_are_derived_from_their_templates(tokenizer, template, stop):
    changed = with_template(tokenizer, template)
    fmt = modelfile.chat_format(changed)
    assert fmt.default_system is None and stop in fmt.stops
    text = modelfile.modelfile_text("m.gguf", fmt, None)
    assert "SYSTEM" not in text
    for messages in CONVERSATIONS:
        want = changed.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered_by_ollama(text, messages) == want[len(fmt.bos_left_out):]
    # One text for every role with the role's name in it, else one branch per role.
    assert ('{{ else if eq .Role "user" }}### Question:\n{{ .Content }}' in text) == (template is QA)


@pytest.mark.parametrize("template, reason", [
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] | upper }}\n{% endfor %}", "rewrites contents"),
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] | trim }}\n{% endfor %}", "rewrites contents"),
    ("{% for m in messages %}{{ loop.index|string + m['role'] + m['content'] }}{% endfor %}", "differently after"),
    ("{% for m in messages %}{{ m['role'] + m['content'] + m['content'] }}{% endfor %}", "content once"),
    ("{% for m in messages %}{{ '{{' + m['role'] + m['content'] }}{% endfor %}", "cannot hold"),
])
def test_templates_ollama_cannot_express_are_refused_with_one_line(tokenizer, template, reason):
    with pytest.raises(modelfile.CannotExpress, match=reason):
        modelfile.chat_format(with_template(tokenizer, template))


def test_no_template_and_unquotable_system_prompts_are_refused(tokenizer):
    with pytest.raises(modelfile.CannotExpress, match="no chat template"):
        modelfile.chat_format(with_template(tokenizer, None))
    with pytest.raises(ExplorerError, match='holds """'):
        modelfile.modelfile_text("m.gguf", modelfile.chat_format(tokenizer), 'Say """hi"""')
    with pytest.raises(ExplorerError, match="drops .U[+]00A0, U[+]200B"):  # a spreadsheet's no-break space
        modelfile.modelfile_text("m.gguf", modelfile.chat_format(tokenizer), "Rosie\u00a0Bakery\u200b")
    assert 'SYSTEM """Tabs\tand\nlines"""' in modelfile.modelfile_text("m.gguf", modelfile.chat_format(tokenizer),
                                                                    "Tabs\tand\nlines")


def test_the_parser_reads_modelfiles_as_ollama_does():
    text = ('# a comment\nFROM ./my model.gguf\nPARAMETER stop "<|im_end|>"\nPARAMETER num_ctx 2048\n'
            'SYSTEM """Say "hi" \n\tthen\u200b stop"""\nTEMPLATE {{ .Prompt }}\nMESSAGE user Hello there\n')
    assert ollama_render.parse(text) == [
        ("model", "./my model.gguf"), ("stop", "<|im_end|>"), ("num_ctx", "2048"),
        ("system", 'Say "hi" \n\tthen stop'),  # the zero-width space dropped, as Go's strconv.IsPrint refuses it
        ("template", "{{ .Prompt }}"), ("message", "user: Hello there")]
    with pytest.raises(ExplorerError, match="no FROM line"):
        ollama_render.parse("SYSTEM hi\n")
    with pytest.raises(ExplorerError, match="inside a quoted value"):
        ollama_render.parse('FROM x\nSYSTEM """never closed\n')


def test_render_go_trims_and_branches_as_go_text_template():
    template = ('{{- range .Messages -}}\n  {{ if eq .Role "user" }}U:{{ .Content }}\n{{- else if eq .Role "system" -}}'
                '\n S:{{ .Content }}|{{ else }}A:{{ .Content }};{{ end }}{{ end }}>')
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}]
    assert ollama_render.render_go(template, messages) == "S:s|U:uA:a;>"
    with pytest.raises(ExplorerError, match="does not implement"):
        ollama_render.render_go("{{ .System }}", messages)


def test_commands_and_names(tmp_path):
    gguf_path, path = tmp_path / "merged-20261207-170105-lora-f15f34-q8_0.gguf", tmp_path / "x.Modelfile"
    create, run, llama = modelfile.commands(gguf_path, path, "It's Rosie's")
    assert create == "ollama create merged-20261207-170105-lora-f15f34-q8_0 -f x.Modelfile"
    assert run == "ollama run merged-20261207-170105-lora-f15f34-q8_0"
    assert llama == f"llama-cli -m {gguf_path.name} -cnv --jinja -sys 'It'\"'\"'s Rosie'\"'\"'s'"
    assert modelfile.commands(gguf_path, None, None) == [f"llama-cli -m {gguf_path.name} -cnv --jinja"]
    assert modelfile.ollama_name("My Bakery_FAQ v2") == "my-bakery_faq-v2"
