"""The Calculator's shared answers (issue 18): identical questions share one result, a changed option or setting
never gets another question's answer, the cache is bounded; the exact count can be built in the background."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer import calculator
from explorer.calculator import answers, exact
from explorer.costs import memory, specs
from explorer.errors import ExplorerError
from explorer.methods import METHODS
from explorer.models import specs as model_specs

MODEL = "smollm2-135m"  # a catalog config: no weights, derived once per test process


def test_identical_requests_share_one_result():
    values = {"r": 12, "lora_alpha": 24, "batch_size": 3}
    first = calculator.from_request(MODEL, "lora", values, exact_mode="cached")
    assert calculator.from_request(MODEL, "lora", dict(values), exact_mode="cached") is first
    # loose values that coerce to the same question are the same question
    assert calculator.from_request(MODEL, "lora", {"r": "12", "lora_alpha": 24.0, "batch_size": "3"},
                                   exact_mode="cached") is first
    with_counts = calculator.from_request(MODEL, "lora", values, exact_mode="compute")
    assert with_counts.exact_counts == (first.trainable_formula, first.total_params_with_method)
    assert calculator.from_request(MODEL, "lora", values, exact_mode="compute") is with_counts
    assert calculator.from_request(MODEL, "lora", values, exact_mode="cached") is with_counts
    assert calculator.from_request(MODEL, "lora", values, exact_mode="skip") is first

    got = []
    question = {"r": 13, "seq_len": 77}  # asked by 8 users at the same moment, for the first time
    together = threading.Barrier(8)

    def user():
        together.wait()
        got.append(calculator.from_request(MODEL, "lora", question, exact_mode="skip"))

    threads = [threading.Thread(target=user) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(result is got[0] for result in got)


# Values for every option and setting field, drawn per field type: the registry's own fields, so a new
# method's options are covered without naming it.
def field_values(f: dataclasses.Field):
    default, meta = f.default, f.metadata
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        low = meta.get("min", 0)
        return st.integers(low, min(meta.get("max", low + 64), low + 64))
    if isinstance(default, float):
        return st.sampled_from([default, 0.0, 0.05, 0.1, 0.5, 1.0, 16.0])
    if meta.get("choices"):
        return st.sampled_from(list(meta["choices"]))
    return st.just(default)


@st.composite
def questions(draw):
    method = draw(st.sampled_from(sorted(METHODS)))
    fields = dataclasses.fields(METHODS[method].options_type) + dataclasses.fields(memory.TrainSettings)
    chosen = draw(st.lists(st.sampled_from(fields), max_size=3, unique_by=lambda f: f.name))
    return method, {f.name: draw(field_values(f)) for f in chosen}


def fresh(method: str, values: dict) -> dict:
    """The question computed from scratch: an empty cache in place of the shared one."""
    shared, answers.shared = answers.shared, answers.Answers()
    try:
        return calculator.from_request(MODEL, method, values, exact_mode="skip").as_json()
    finally:
        answers.shared = shared


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=questions(), second=questions())
def test_a_changed_option_never_gets_another_questions_answer(first, second):
    answered = []
    for method, values in (first, second, first):
        try:
            answered.append(calculator.from_request(MODEL, method, values, exact_mode="skip"))
        except ExplorerError:
            return  # a combination the method refuses: nothing cached, nothing to compare
    a, b, a_again = answered
    assert a_again is a
    want_a, want_b = fresh(*first), fresh(*second)
    assert a.as_json() == want_a and b.as_json() == want_b, "a cached answer differs from its own question's"
    question = lambda answer: (answer["method"], answer["options"], answer["settings"])  # noqa: E731
    assert (a is b) == (question(want_a) == question(want_b))


def test_the_key_keeps_types_and_whole_configs_apart():
    spec = model_specs.resolve(MODEL)
    other = specs.spec_from_dict({**spec.raw, "num_hidden_layers": 2}, spec.name, spec.source)
    options, defaults = METHODS["lora"].parse_options({}), memory.TrainSettings()
    assert answers.question_key(spec, "lora", options, defaults) != answers.question_key(other, "lora", options,
                                                                                         defaults)
    assert answers.frozen(1) != answers.frozen(1.0) != answers.frozen(True)
    assert answers.frozen(["q", "v"]) != answers.frozen(("q", "v")) != answers.frozen("q,v")
    assert calculator.from_request(MODEL, "lora", {}, exact_mode="skip").total_params != \
        calculator.calculate(other, "lora", options, defaults, exact_mode="skip").total_params


def test_the_cache_is_bounded():
    cache = answers.Answers(limit=3)
    for i in range(3):
        cache.put(i, f"answer {i}")
    assert cache.get(0) == "answer 0"  # used: the least recently used is now 1
    cache.put(3, "answer 3")
    assert len(cache) == 3 and cache.get(1) is None and cache.get(0) == "answer 0"
    assert cache.put(3, "another") == "answer 3", "the first answer stored is the one every user gets"
    calls = []
    assert cache.get_or_compute(9, lambda: calls.append(1) or "nine") == "nine"
    assert cache.get_or_compute(9, lambda: calls.append(1) or "again") == "nine" and calls == [1]
    with pytest.raises(ZeroDivisionError):
        cache.get_or_compute(10, lambda: 1 / 0)
    assert cache.get(10) is None, "a failure is not stored"
    assert 1 <= answers.shared.limit == answers.MAX_ANSWERS < 100_000


def test_exact_counts_built_in_the_background_once():
    spec = model_specs.resolve(MODEL)
    options = METHODS["lora"].parse_options({"r": 61, "lora_alpha": 7})  # asked nowhere else
    assert exact.cached(spec, "lora", options) is None
    assert exact.in_background(spec, "lora", options) is True
    assert exact.in_background(spec, "lora", options) in (True, False)  # waiting, or built already: never twice
    deadline = time.time() + 120
    while exact.cached(spec, "lora", options) is None:
        assert time.time() < deadline, "the background build never finished"
        time.sleep(0.05)
    assert exact.in_background(spec, "lora", options) is False, "known counts are not built again"
    formulas = calculator.calculate(spec, "lora", options, exact_mode="skip")
    assert exact.cached(spec, "lora", options) == (formulas.trainable_formula, formulas.total_params_with_method)


def test_a_refusal_is_kept_and_answered_again(monkeypatch):
    spec = model_specs.resolve(MODEL)
    options = METHODS["lora"].parse_options({"r": 59})
    builds = []

    def refuse(*args, **kwargs):
        builds.append(1)
        raise ValueError("Target modules {'nope'} not found in the base model.")

    monkeypatch.setattr(exact, "build_on_meta", refuse)  # PEFT refusing, as it does for e.g. a Mamba layer
    try:
        for _ in range(2):
            with pytest.raises(ExplorerError, match="PEFT could not build .* on this model: Target modules"):
                exact.exact_counts(spec, "lora", options)
        assert builds == [1] and exact.refused(spec, "lora", options).startswith("PEFT could not build")
        assert exact.cached(spec, "lora", options) is None
        assert exact.in_background(spec, "lora", options) is False, "a refusal is not built again"
    finally:
        exact._refused.pop(exact.cache_key(spec, "lora", options), None)  # the real PEFT builds it


def test_the_servers_builds_run_in_one_child_process_at_the_lowest_priority():
    """app.py builds exact counts in a child process (outside the server's GIL): the same counts and refusals
    as a build here, the background contract unchanged, the child at niceness 19, stopped by its pid."""
    import os

    spec = model_specs.resolve(MODEL)
    fresh = METHODS["lora"].parse_options({"r": 57, "lora_alpha": 3})     # asked nowhere else
    waited = METHODS["lora"].parse_options({"r": 55, "lora_alpha": 3})
    bad = METHODS["lora"].parse_options({"target_preset": "custom", "target_modules": "nope_proj"})
    exact.build_in_child_process()
    try:
        assert exact.in_background(spec, "lora", fresh) is True
        pid = exact.child_pid()
        assert pid and pid != os.getpid()
        counts = exact.exact_counts(spec, "lora", waited)  # waits for the child (started by now)
        nice = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])
        assert nice == 19, "the child yields to the server and to a training"
        with pytest.raises(ExplorerError, match="no linear layer named nope_proj") as from_child:
            exact.exact_counts(spec, "lora", bad)
        deadline = time.time() + 120
        while exact.cached(spec, "lora", fresh) is None:
            assert time.time() < deadline, "the background build never landed"
            time.sleep(0.05)
        assert exact.in_background(spec, "lora", fresh) is False, "known counts are not built again"
    finally:
        exact.build_in_child_process(False)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    for options in (fresh, waited):
        here = exact._count_or_refusal(spec, "lora", options)
        assert ("counts", exact.cached(spec, "lora", options)) == here, "the child counts as a build here does"
    assert counts == exact.cached(spec, "lora", waited)
    with pytest.raises(ExplorerError) as here:
        exact._count_or_refusal(spec, "lora", bad)
    assert str(here.value) == str(from_child.value), "the same message as a build here"
