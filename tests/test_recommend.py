"""The decision helper: the chapter's three scenarios, a table of jobs, exact numbers, bad input."""

import dataclasses
import itertools
import json
import math

import pytest

from explorer import calculator
from explorer.costs import memory
from explorer.errors import ExplorerError
from explorer.learn.recommend import (
    GOALS,
    LADDER,
    RULES,
    SCENARIOS,
    Job,
    match_rule,
    recommend,
)
from explorer.methods import METHODS
from explorer.models import specs as model_specs


def calc_for(rec, model):
    """The calculator's own result for what was recommended, at the settings it used."""
    return calculator.calculate(model_specs.resolve(model), rec.method, METHODS[rec.method].parse_options(rec.options),
                                memory.TrainSettings(**rec.settings), exact_mode="skip")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_chapter_scenarios_give_the_chapters_method(name):
    scenario = SCENARIOS[name]
    rec = recommend(scenario.job)
    assert rec.method == scenario.method
    assert rec.fits
    assert scenario.summary


def test_support_bot_note_shows_24_gb_is_not_enough_for_a_4bit_70b():
    job = SCENARIOS["support-bot-70b"].job
    rec = recommend(job)
    assert rec.options["r"] == 16                       # the chapter's "rank 16-32"
    assert {d["method"] for d in rec.not_fitting} == {"lora", "dora"}   # the bf16 base needs 130+ GiB
    # The chapter's "24-48 GB GPU": at the leanest settings QLoRA still needs more than 24 GiB.
    leanest = calculator.calculate(model_specs.resolve(job.model), "qlora", METHODS["qlora"].parse_options(
        {"r": 16, "lora_alpha": 32}), LADDER[-1][1], exact_mode="skip").training.total_bytes / memory.GIB
    assert leanest > 24
    assert f"{leanest:.1f} GiB" in rec.chapter_note and "24 GB" in rec.chapter_note
    assert not recommend(dataclasses.replace(job, memory_gb=24.0)).fits
    # Its share of trainable parameters is below the chapter's 0.5-2 %.
    assert rec.as_json()["calculation"]["trainable_percent"] < 0.5 and "0.5-2%" in rec.chapter_note


def test_personas_note_gives_the_exact_prefix_count():
    rec = recommend(SCENARIOS["composable-personas"].job)
    exact = calculator.calculate(model_specs.resolve("llama-2-7b"), "prefix", METHODS["prefix"].parse_options(
        {"num_virtual_tokens": 20}), exact_mode="skip").trainable_formula
    assert f"{exact:,}" in rec.chapter_note and "164K" in rec.chapter_note
    assert rec.runner_up is not None and rec.runner_up.method == "prompt"


def test_embeddings_scenario_trains_a_head_and_lora_is_runner_up():
    rec = recommend(SCENARIOS["sentence-embeddings-1b"].job)
    assert rec.options["head_type"] == "embedding"
    assert rec.runner_up.method == "lora"
    assert rec.chapter_note == ""
    # ... and points at a run this machine can do: the CLI command parses and the dataset is of the right kind.
    command = rec.try_it.split("`")[1].split()
    assert command[:3] == ["python", "-m", "explorer"] and "head_type=embedding" in command
    from explorer.cli.main import build_parser
    from explorer.data import sources

    args = build_parser().parse_args(command[3:])
    assert sources.dataset_kind(args.dataset) == METHODS["head"].data_kind(
        METHODS["head"].parse_options(dict(s.split("=") for s in args.set)))


JOBS = [
    # (model, memory_gb, examples, goal, latency_sensitive, many_adapters) -> method
    ("llama-3.1-8b", 12, 5000, "style", False, False, "qlora"),          # tiny memory forces 4-bit
    ("llama-3.1-8b", 80, 5000, "style", False, False, "lora"),
    ("qwen2.5-0.5b", 16, 20000, "classify", False, False, "head"),
    ("llama-3.1-8b", 80, 5000, "style", True, True, "lora"),             # many adapters + latency: merges
    ("mistral-7b", 40, 3000, "multi_tenant", True, False, "lora"),
    ("smollm2-360m", 80, 500_000, "knowledge", False, False, "full"),    # tons of data, small model
    ("llama-2-70b", 80, 500_000, "knowledge", False, False, "qlora"),    # tons of data, no room for full
    ("llama-2-13b", 200, 300, "style", False, False, "prompt"),          # few examples, 10B+ model
    ("llama-2-13b", 200, 300, "style", True, False, "ia3"),              # ... latency-sensitive: not prompt
    ("llama-2-7b", 40, 300, "style", False, False, "ia3"),               # few examples, small model
    ("llama-3.1-8b", 80, 20000, "knowledge", False, False, "lora"),
    ("llama-2-7b", 24, 2000, "personas", True, False, "lora"),           # soft tokens cannot merge
    ("gemma-2-2b", 24, 10000, "classify", False, False, "head"),
]


@pytest.mark.parametrize("model, memory_gb, examples, goal, latency, many, method", JOBS)
def test_job_table(model, memory_gb, examples, goal, latency, many, method):
    rec = recommend(Job(model, float(memory_gb), examples, goal, latency, many))
    assert rec.method == method, rec.reasons
    assert rec.fits
    assert rec.as_json()["training_memory_gb"] <= memory_gb
    assert all(d["needed_gb"] > memory_gb for d in rec.not_fitting)
    if rec.runner_up:
        assert rec.runner_up.method != rec.method or rec.runner_up.options != rec.options


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_numbers_are_the_calculators(name):
    job = SCENARIOS[name].job
    rec = recommend(job)
    result = calc_for(rec, job.model)
    data = rec.as_json()
    json.dumps(data)                                  # plain JSON
    assert data["trainable_params"] == result.trainable_formula
    assert data["calculation"]["memory"]["total_bytes"] == result.training.total_bytes
    text = " ".join(rec.reasons)
    assert f"{result.trainable_formula:,} trainable parameters" in text
    assert f"{result.training.total_bytes / memory.GIB:.1f} GiB" in text
    assert f"{result.as_json()['trainable_percent']:.3g}%" in text


def test_nothing_fits_says_what_to_change():
    rec = recommend(Job("llama-3.1-405b", 16.0, 5000, "style"))
    assert not rec.fits and rec.runner_up is None
    assert rec.method == "qlora"                      # the leanest candidate
    needed = rec.as_json()["training_memory_gb"]
    assert needed > 16 and "Nothing fits in 16 GiB" in rec.reasons[0] and "smaller base model" in rec.reasons[0]
    assert {d["method"] for d in rec.not_fitting} == {"lora", "qlora", "dora"}


def test_runnable_bundled_model(cache):
    rec = recommend(Job.parse({"model": "smollm2-135m-instruct", "memory_gb": "8", "examples": "400",
                               "goal": "classify"}))
    assert rec.method == "head" and rec.fits


def test_parse_coerces_loose_values():
    job = Job.parse({"model": "llama-2-7b", "memory_gb": "24", "examples": "5000", "goal": "style",
                     "latency_sensitive": "yes", "many_adapters": "0"})
    assert job == Job("llama-2-7b", 24.0, 5000, "style", True, False)


@pytest.mark.parametrize("values, message", [
    ({"memory_gb": float("nan")}, "memory_gb must be a finite number"),
    ({"memory_gb": "inf"}, "memory_gb must be a finite number"),
    ({"memory_gb": -8}, "memory_gb must be a finite number"),
    ({"examples": -5}, "examples must be between 1"),
    ({"examples": 2.5}, "examples must be a whole number"),
    ({"goal": "world domination"}, "goal must be one of style, knowledge, classify"),
    ({"model": "llama-9-1t"}, "Unknown model 'llama-9-1t'"),
    ({"batch": 4}, "has no field batch"),
])
def test_bad_input_raises_a_helpful_error(values, message):
    with pytest.raises(ExplorerError, match=message):
        Job.parse(values)


def test_recommend_checks_a_job_built_directly():
    with pytest.raises(ExplorerError, match="memory_gb"):
        recommend(Job("llama-2-7b", math.nan, 100, "style"))


def test_every_method_in_the_rules_exists():
    for rule in RULES:
        assert rule.candidates, rule.name
        for candidate in rule.candidates:
            assert candidate.method in METHODS, (rule.name, candidate.method)
            METHODS[candidate.method].parse_options(candidate.options)   # valid options too
        # A latency-sensitive job always keeps a candidate that merges.
        assert any(METHODS[c.method].mergeable for c in rule.candidates), rule.name


def test_rules_cover_every_goal():
    assert set(GOALS) == {g for rule in RULES for g in rule.goals}
    small, big = 1e8, 1e11
    for goal, examples, params, latency, many in itertools.product(
            GOALS, (1, 999, 1000, 5000, 99_999, 100_000, 10**9), (small, big), (False, True), (False, True)):
        job = Job("llama-2-7b", 24.0, examples, goal, latency, many)
        assert match_rule(job, params) is not None


def test_the_fine_tune_tabs_pick_follows_the_kind_of_data_and_the_short_budget():
    """Fine-tune asks for a short fine-tune of the data in hand: chat rows get LoRA r=8 (the quick rule: the
    chapter's IA³ for very few rows moves too slowly in tens of steps), labelled text a classifier head,
    pairs an embedding head; without the quick flag the chapter's small-data rule stands."""
    from explorer.learn.recommend import for_data

    chat = for_data("smollm2-135m-instruct", "chat", 48, 16.0)
    assert (chat.method, chat.options["r"], chat.rule) == ("lora", 8, "quick") and chat.fits
    assert for_data("smollm2-135m-instruct", "labelled", 100, 16.0).options["head_type"] == "classifier"
    assert for_data("smollm2-135m-instruct", "pairs", 60, 16.0).options["head_type"] == "embedding"
    assert recommend(Job("smollm2-135m-instruct", 16.0, 48, "style")).method == "ia3"
