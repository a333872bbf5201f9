"""The calculator through its CLI, its API and the browser; bad input never escapes as a traceback."""

import json
import math
import time

import pytest
from conftest import wait_for_text
from gradio_client import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import run_cli, run_cli_in_process

from explorer import calculator
from explorer.errors import ExplorerError
from explorer.methods import METHODS

LLAMA2_LORA_R8_ALL = 19_988_480


def test_cli_calc_json_has_the_documented_fields():
    result = run_cli("calc", "--model", "llama-2-7b", "--method", "lora", "--set", "r=8", "--set", "seq_len=256",
                     "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("model", "method", "options", "trainable_params", "total_params", "trainable_percent", "exact",
                "mergeable", "adapter_file_bytes", "memory", "flops"):
        assert key in out
    assert set(out["memory"]) >= {"weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes",
                                  "total_bytes"}
    assert set(out["flops"]) >= {"base_forward_per_token", "train_per_token",
                                 "inference_overhead_per_token_unmerged", "inference_overhead_per_token_merged"}
    assert out["trainable_params"] == LLAMA2_LORA_R8_ALL and out["exact"] is True
    assert out["flops"]["inference_overhead_per_token_merged"] == 0


def test_cli_peft_option_names(tmp_path, capsys):
    """In this process (the interpreter's own start is covered by the documented-fields test above)."""
    from explorer.cli.main import main

    def calc_json(*args):
        code = main(["calc", *args, "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)

    out = calc_json("--model", "llama-2-7b", "--method", "lora", "--set", "target_modules=q_proj,v_proj",
                    "--set", "use_dora=true")
    assert out["method"] == "dora" and out["trainable_params"] == 32 * (2 * 8 * 8192 + 2 * 4096)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}))
    out = calc_json("--model", str(config), "--method", "prompt")
    assert out["trainable_params"] == 20 * 64 and out["exact"] is True


@pytest.mark.parametrize("args, message", [
    (["--model", "llama-2-7b", "--method", "lora", "--set", "r=0"], "r must be between"),
    (["--model", "llama-2-7b", "--method", "lora", "--set", "r=nan"], "whole number"),
    (["--model", "llama-2-7b", "--method", "lora", "--set", "target_modules=c_attn"], "no linear layer named c_attn"),
    (["--model", "llama-2-7b", "--method", "magic"], "Unknown method"),
    (["--model", "llama-2-7b", "--method", "prompt", "--set", "seq_len=-5"], "seq_len"),
    (["--model", "no-such-model", "--method", "lora"], "Unknown model"),
])
def test_cli_calc_errors(capsys, args, message):
    code, err = run_cli_in_process(capsys, "calc", *args)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"hidden_size": 8}', "model_type"),
    ('{"model_type": "definitely-not-a-model"}', "does not know"),
    ('{"model_type": "llama", "hidden_size": -4}', "hidden size"),
    ('{"model_type": "llama", "hidden_size": 1000000, "intermediate_size": 4000000, "num_hidden_layers": 1000, '
     '"num_attention_heads": 8}', "calculator stops"),
    ('{"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}', "remote code"),
])
def test_bad_configs_get_clear_messages(text, message):
    with pytest.raises(ExplorerError, match=message):
        calculator.from_request("", "lora", {}, exact_mode="skip", config_text=text)


numbers = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.sampled_from(["", "1e3", "0", "-1", "NaN", "inf", "2.5"]))


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(list(METHODS)), key=st.sampled_from(
    ["r", "lora_alpha", "lora_dropout", "num_virtual_tokens", "bottleneck_dim", "num_classes", "encoder_hidden_size",
     "batch_size", "seq_len"]), value=numbers)
def test_any_numeric_input_gives_a_result_or_a_clear_error(method, key, value):
    fields = {f for f in METHODS[method].options_type.__dataclass_fields__} | calculator.SETTING_KEYS
    if key not in fields:
        return
    try:
        r = calculator.from_request("smollm2-135m", method, {key: value}, exact_mode="skip")
    except ExplorerError as error:
        assert str(error)
        return
    out = r.as_json()
    assert out["trainable_params"] > 0
    per_gpu = {k: v for k, v in out["memory"]["per_gpu"].items() if k.endswith("_bytes")}
    memory = {**{k: v for k, v in out["memory"].items() if k != "per_gpu"}, **per_gpu}
    assert all(math.isfinite(v) and v >= 0 for v in memory.values())
    assert math.isfinite(out["flops"]["train_per_token"]) and out["flops"]["train_per_token"] > 0


def test_api_calc(app_url):
    client = Client(app_url, verbose=False)
    out = client.predict("llama-2-7b", "lora", '{"r": 8}', "", api_name="/calc")
    assert out["trainable_params"] == LLAMA2_LORA_R8_ALL and out["exact"] is True
    assert "error" in client.predict("llama-2-7b", "lora", '{"r": -1}', "", api_name="/calc")
    assert "error" in client.predict("llama-2-7b", "lora", "{oops", "", api_name="/calc")
    pasted = client.predict("", "adapter", '{"bottleneck_dim": 4}',
                            json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2,
                                        "vocab_size": 50}), api_name="/calc")
    assert pasted["trainable_params"] == 2 * 2 * (2 * 32 * 4 + 4 + 32)


def test_api_calc_formula_first(app_url):
    """wait_for_exact=false answers with the formulas at once and "exact": false while the count is built in
    the background; asked again, the same question has "exact": true and the same trainable count."""
    client = Client(app_url, verbose=False)
    question = ("llama-2-13b", "lora", '{"r": 71, "lora_alpha": 5, "batch_size": 3}', "")  # asked nowhere else
    first = client.predict(*question, False, api_name="/calc")
    assert first["exact"] is False and first["exact_pending"] is True and first["exact_trainable_params"] is None
    deadline = time.time() + 120
    later = first
    while later["exact_pending"]:
        assert time.time() < deadline, "the exact count never arrived"
        time.sleep(0.2)
        later = client.predict(*question, False, api_name="/calc")
    assert later["exact"] is True and later["exact_trainable_params"] == later["trainable_params"]
    assert later["trainable_params"] == first["trainable_params"] == first["trainable_formula"]
    waited = client.predict(*question, api_name="/calc")  # the default waits, as before
    assert "exact_pending" not in waited and waited == {k: v for k, v in later.items() if k != "exact_pending"}
    refused = client.predict("llama-2-7b", "lora", '{"r": -1}', "", False, api_name="/calc")
    assert "r must be between" in refused["error"]


def test_browser_rank_slider_changes_the_count(app_url, page, screenshot):
    page.goto(app_url)
    wait_for_text(page, "#calc-headline", "Verified")
    assert f"{LLAMA2_LORA_R8_ALL:,} trainable" in page.locator("#calc-headline").inner_text()
    page.locator("#calc-lora-r input[type=range]").fill("16")
    wait_for_text(page, "#calc-headline", f"{2 * LLAMA2_LORA_R8_ALL:,} trainable", timeout=30_000)
    wait_for_text(page, "#calc-headline", "Verified")
    assert page.locator("#calc-memory .js-plotly-plot").count() == 1
    assert "q_proj" in page.locator("#calc-formula").inner_text()
    screenshot("calculator_tab")


def test_browser_out_of_range_slider_value_names_its_field(app_url, page):
    """gradio's own range check says "Value 1000 is greater than maximum value 64." and names no field."""
    page.goto(app_url)
    wait_for_text(page, "#calc-headline", "Verified")
    box = page.locator("#calc-setting-batch_size input[type=number]")
    box.fill("1000")
    box.press("Enter")
    toast = page.get_by_text("batch_size must be between 1 and 64 (you typed 1000)")
    toast.wait_for(timeout=20_000)
    assert "That value was not used" in toast.inner_text()
