"""Hostile numbers (issue 6): property-based tests over every Calculator and training control and
option: NaN, infinities, negative and absurd values give a valid result or a clear message."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer import calculator, generate
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import provision
from explorer.train.loop import TrainConfig

# --------------------------------------------------------------------------- 3. numbers

HUGE = st.sampled_from([10**400, -10**400, 10**5000, 2**63, -2**63 - 1, 2**53 + 1, 1e308, -1e308, 5e-324])
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 70_000), st.integers(), HUGE)
TEXT = st.one_of(st.text(max_size=12), st.sampled_from([
    "", " ", "nan", "NaN", "-inf", "inf", "1e400", "-1", "0", "1", "2", "8", "8.0", "8.5", " 16 ", "1_000",
    "0x10", "\uff18", "true", "false", "yes", "off", "bf16", "fp32", "fp16", "int8", "adamw", "adamw8bit", "sgd",
    "custom", "q_proj,v_proj", "q_proj,,", " ,", "lm_head", "down_proj", "k_proj,v_proj,down_proj", "nope",
    "classifier", "lm", "all-linear", "re:.*q_proj", "re:[", "layers[", "(", "*", "q,v", "attention", "bfloat16", "float32", "x" * 10_000, "9" * 5000]))
OTHER = st.sampled_from([None, True, False, [], [8], ["q_proj"], {"r": 8}, b"8"])
VALUES = st.one_of(NUMBERS, TEXT, OTHER)
FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _field_ok(f: dataclasses.Field, value) -> bool:
    """A parsed value has the field's type and respects its bounds."""
    default, meta = f.default, f.metadata
    if isinstance(default, bool):
        return type(value) is bool
    if isinstance(default, (int, float)):
        if isinstance(default, int) and type(value) is not int:
            return False
        if not math.isfinite(value):
            return False
        return meta.get("min", -math.inf) <= value <= meta.get("max", math.inf)
    return isinstance(value, str) and (not meta.get("choices") or value in meta["choices"])


def _all_fields_ok(obj) -> bool:
    return all(_field_ok(f, getattr(obj, f.name)) for f in dataclasses.fields(obj))


def _message_ok(error: ExplorerError) -> bool:
    message = str(error)
    return bool(message) and len(message) < 1000 and "Traceback" not in message


@pytest.mark.parametrize("method_name", list(METHODS))
@FAST
@given(st.data())
def test_calculator_from_request_gives_a_result_or_a_clear_error(method_name, draw):
    option_keys = [f.name for f in dataclasses.fields(METHODS[method_name].options_type)]
    keys = option_keys + sorted(calculator.SETTING_KEYS) + ["use_dora", "no_such_option"]
    values = draw.draw(st.dictionaries(st.sampled_from(keys), VALUES, max_size=4))
    try:
        result = calculator.from_request(provision.TINY_NAME, method_name, values)
    except ExplorerError as error:
        assert _message_ok(error), error
        return
    out = result.as_json()
    assert _all_fields_ok(result.options) and _all_fields_ok(result.settings)
    assert out["trainable_params"] > 0 and 0 < out["trainable_percent"] <= 100
    assert result.agrees, "formula and exact count disagree"
    per_gpu = {k: v for k, v in out["memory"]["per_gpu"].items() if k.endswith("_bytes")}
    memory = {**{k: v for k, v in out["memory"].items() if k != "per_gpu"}, **per_gpu}
    assert all(math.isfinite(v) and v >= 0 for v in memory.values())
    assert all(math.isfinite(v) and v >= 0 for v in out["inference_memory"].values())
    assert all(math.isfinite(v) for v in out["flops"].values())


@pytest.mark.parametrize("method_name", list(METHODS))
@FAST
@given(st.data())
def test_parse_options_gives_valid_options_or_a_clear_error(method_name, draw):
    method = METHODS[method_name]
    keys = [f.name for f in dataclasses.fields(method.options_type)] + ["bogus"]
    values = draw.draw(st.dictionaries(st.sampled_from(keys), VALUES, max_size=4))
    try:
        options = method.parse_options(values)
    except ExplorerError as error:
        assert _message_ok(error), error
        return
    assert _all_fields_ok(options)


@settings(max_examples=150, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(TrainConfig)] + ["lr"]), VALUES,
                       max_size=6))
def test_train_config_parse_gives_a_valid_config_or_a_clear_error(values):
    try:
        config = TrainConfig.parse(values)
    except ExplorerError as error:
        assert _message_ok(error), error
        return
    assert _all_fields_ok(config)


@settings(max_examples=100, deadline=None, database=None)
@given(VALUES)
def test_check_max_new_tokens(value):
    try:
        number = generate.check_max_new_tokens(value)
    except ExplorerError as error:
        assert str(error).startswith("max new tokens must be") and _message_ok(error)
        return
    assert type(number) is int and 1 <= number <= generate.MAX_NEW_TOKENS_LIMIT


@pytest.mark.parametrize("value, message", [
    (10**400, "r must be a whole number, got 1000000000"),
    (10**5000, "r must be a whole number, got a number too large to show"),
    ("9" * 5000, "r must be a whole number, got '99999"),
    (float("nan"), "r must be a whole number, got nan"),
    (-(10**400), "r must be a whole number"),
], ids=["1e400", "1e5000", "9x5000", "nan", "-1e400"])
def test_huge_numbers_get_short_messages(value, message):
    with pytest.raises(ExplorerError, match=message) as error:
        METHODS["lora"].parse_options({"r": value})
    assert len(str(error.value)) < 200
    with pytest.raises(ExplorerError, match="max new tokens must be a whole number"):
        generate.check_max_new_tokens(value)
    with pytest.raises(ExplorerError, match="lora_dropout must be a"):
        METHODS["lora"].parse_options({"lora_dropout": value})
