"""Learned mixtures on the tiny model: on a constructed case whose answer is known (one adapter trained on the
target task among two distractors) the gradient-free search gives that adapter the largest weight and lowers
the few-shot loss below the uniform mixture; progress is reported live; bad input gets one clear line."""

import json

import pytest
from conftest import copy_run, train_run

from explorer.compare import mixture
from explorer.errors import ExplorerError


@pytest.fixture(scope="module")
def three_runs(lora_pirate):
    """French is the target: its adapter trains longest; pirate and JSON extraction are the distractors."""
    return {"pirate": lora_pirate,
            "french": train_run("lora", "french", learning_rate=0.05, steps=8),
            "json_extract": train_run("lora", "json_extract", learning_rate=0.05)}


def test_search_finds_the_target_adapter_and_beats_the_uniform_mixture(three_runs):
    events = []
    ids = [three_runs["pirate"], three_runs["french"], three_runs["json_extract"]]
    result = mixture.learn_weights(ids, "french", shots=4, iterations=4, heldout_examples=2, max_new_tokens=2,
                                   on_iteration=events.append)
    json.dumps(result)
    weights = result["weights"]
    assert max(weights, key=weights.get) == three_runs["french"], weights
    assert all(-mixture.BOUND <= w <= mixture.BOUND for w in weights.values())
    assert result["few_shot_loss"]["learned mixture"] < result["few_shot_loss"]["uniform mixture"]
    # Live progress: one event per generation, the best loss never rises.
    assert events == result["history"] and 1 <= len(events) <= 4
    best = [e["best_loss"] for e in events]
    assert best == sorted(best, reverse=True) and events[-1]["evaluations"] >= 2 * len(events)
    ev = result["evaluation"]
    assert list(ev) == ["base", *ids, "uniform mixture", "learned mixture"]
    assert ev["learned mixture"]["few_shot_loss"] == pytest.approx(result["few_shot_loss"]["learned mixture"], abs=1e-5)
    assert ev["uniform mixture"]["few_shot_loss"] == pytest.approx(result["few_shot_loss"]["uniform mixture"], abs=1e-5)
    assert ev[three_runs["french"]]["few_shot_loss"] < ev[three_runs["pirate"]]["few_shot_loss"]
    assert all(isinstance(v["task_score"], float) for v in ev.values()) and result["task"] == "french"
    assert f"went to {three_runs['french']} (french)" in result["summary"]


def test_examples_come_from_a_file(three_runs, tmp_path):
    rows = [{"prompt": f"Dis bonjour {i}", "response": "Bonjour, je suis là."} for i in range(5)]
    path = tmp_path / "few.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert len(mixture.example_rows(str(path), 3)) == 3
    with pytest.raises(ExplorerError, match="Name the target task"):
        mixture.learn_weights([three_runs["pirate"], three_runs["french"]], str(path))


def test_bad_input_is_one_clear_line(three_runs, tmp_path):
    a, b = three_runs["pirate"], three_runs["french"]
    prompt = train_run("prompt", "pirate", {"num_virtual_tokens": 2}, steps=1)
    other_base = copy_run(b, edit_config={"model": "smollm2-135m-instruct"})
    cases = [
        (([], "french"), {}, "Choose at least one finished run"),
        (([a], "french"), {}, "needs at least two runs"),
        (([a, prompt], "french"), {}, r"uses Prompt tuning \(prompt\); learned mixtures weigh LoRA adapters"),
        (([a, other_base], "french"), {}, "different base models"),
        (([a, b], str(tmp_path / "missing.jsonl")), {"target": "french"}, "No examples file"),
        (([a, b], "french"), {"shots": 0}, "examples to learn from must be between 1 and 32, got 0"),
        (([a, b], "french"), {"iterations": 0}, "iterations must be between 1 and 100, got 0"),
        (([a, b], "french"), {"target": "nowhere"}, "Unknown dataset 'nowhere'"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ExplorerError, match=message):
            mixture.learn_weights(*args, **kwargs)
