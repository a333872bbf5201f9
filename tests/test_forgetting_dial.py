"""Forgetting you can dial back: task and probe scores of a LoRA run at several adapter strengths and PEFT
intruder-dimension settings, measured on the tiny model; the sentence computed from given numbers."""

import json

import pytest
import torch
from conftest import train_run

from explorer.cli.main import main
from explorer.compare import forgetting_dial, variants
from explorer.errors import ExplorerError

IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])


@pytest.fixture(scope="module")
def measured(lora_pirate):
    return forgetting_dial.dial(lora_pirate, "0,0.5", "1,0", examples=3, probe_count=5, max_new_tokens=6)


def test_points_count_ranges_and_settings(measured):
    points = measured["points"]
    assert [p["setting"] for p in points] == ["strength 0", "strength 0.5", "strength 1",
                                              "intruders λ 1", "intruders λ 0"], "1 is always measured"
    for p in points:
        assert 0.0 <= p["task_score"] <= 1.0 and 0.0 <= p["probe_score"] <= 1.0
        assert p["probe_right"] == round(p["probe_score"] * 5) and 0 <= p["probe_right"] <= 5
        assert len(p["replies"]) == 3 + 5 == len(measured["prompts"])
    assert measured["examples"] == 3 and measured["probe_count"] == 5 and measured["intruder_note"] is None
    # Every LoRA layer of the tiny model (2 blocks x 7 default targets) went through PEFT's intruder analysis.
    assert {p["lora_layers"] for p in points if p["kind"] == "intruder"} == {14}


def test_strength_0_is_the_base_model_exactly_and_1_the_trained_adapter(measured, lora_pirate):
    zero, full = measured["points"][0], measured["points"][2]
    base = measured["base"]
    assert zero["replies"] == base["replies"], "strength 0 is the base model, reply for reply"
    assert (zero["probe_score"], zero["task_score"]) == (base["probe_score"], base["task_score"])
    assert full["replies"] != base["replies"], "the trained adapter changes some reply"
    # λ = 1 subtracts nothing: PEFT's re-factored adapter gives the trained adapter's replies.
    assert measured["points"][3]["replies"] == full["replies"]


def test_the_session_is_left_as_it_was(measured, lora_pirate):
    s = variants.session(lora_pirate)
    assert list(s.adapted.peft_config) == ["default"] and s.adapted.active_adapter == "default"
    assert not s.adapted.training
    with torch.no_grad():
        after = s.adapted(input_ids=IDS).logits
        with variants.adapter_strength(s.adapted, 1.0):
            trained = s.adapted(input_ids=IDS).logits
    assert torch.equal(after, trained)


def test_reading_from_given_numbers():
    def point(kind, value, task, right):
        label = f"strength {value:g}" if kind == "strength" else f"intruders λ {value:g}"
        return {"setting": label, "kind": kind, "value": value, "task_score": task, "probe_right": right}

    points = [point("strength", 0.0, 0.1, 10), point("strength", 0.5, 0.4, 9), point("strength", 0.75, 0.45, 9),
              point("strength", 1.0, 0.5, 6), point("intruder", 0.0, 0.3, 8)]
    assert forgetting_dial.reading(points, 10, base_probe_right=10) == (
        "At strength 0.75 it keeps 0.90 of the task and answers 9 of 10 general questions (full strength: 6). "
        "The base model answers 10.")
    flat = [point("strength", 0.0, 0.0, 3), point("strength", 0.5, 0.2, 3), point("strength", 1.0, 0.4, 3)]
    assert forgetting_dial.reading(flat, 10) == (
        "No dialled-back setting answers more general questions than full strength (3 of 10): on this run, "
        "dialling back buys no general knowledge back.")
    nothing = [point("strength", 0.5, 0.0, 5), point("strength", 1.0, 0.0, 4)]
    assert "full strength scores 0" in forgetting_dial.reading(nothing, 10)


def test_bad_settings_are_one_clear_line(lora_pirate, cache):
    ten = ",".join(str(i / 10) for i in range(10))
    for strengths, message in (("0,abc", "separated by commas"), ("2", "from 0 to 1"), (ten, "at most 9")):
        with pytest.raises(ExplorerError, match=message):
            forgetting_dial.dial(lora_pirate, strengths)
    with pytest.raises(ExplorerError, match="probe questions"):
        forgetting_dial.dial(lora_pirate, "0", probe_count=0)
    prompt = train_run("prompt", "pirate", {"num_virtual_tokens": 2}, steps=1)
    with pytest.raises(ExplorerError, match="no adapter scale to dial back"):
        forgetting_dial.dial(prompt, "0")
    dora = train_run("dora", "pirate", steps=1)  # no strength in Compare; PEFT's intruder code drops its magnitudes
    with pytest.raises(ExplorerError, match="DoRA, which has no adapter scale to dial back"):
        forgetting_dial.dial(dora, "0", "0.5")


def test_cli_dial_json(lora_pirate, capsys):
    assert main(["dial", "--run", lora_pirate, "--strengths", "0,1", "--examples", "2", "--probe", "3",
                 "--max-new-tokens", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [p["setting"] for p in result["points"]] == ["strength 0", "strength 1"]
    assert main(["dial", "--run", lora_pirate, "--strengths", "5"]) == 2
    assert "from 0 to 1" in capsys.readouterr().err


def test_page_component_draws_the_curve_and_says_why_without_a_run(measured):
    import gradio as gr

    from explorer.ui import compare_dial

    from explorer.ui.compare_tab import create_compare_tab

    with gr.Blocks():  # beside the Compare tab's own components, on its run dropdown: no clash of elem_ids
        parts = compare_dial.create_dial(create_compare_tab()["run"])
    assert set(parts) == {"button", "reading", "chart"}
    figure = compare_dial.dial_figure(measured)
    base, strength, intruder = figure.data
    assert list(strength.text) == ["strength 0", "strength 0.5", "strength 1"]
    assert list(intruder.text) == ["intruders λ 1", "intruders λ 0"]
    assert list(strength.y) == [p["probe_right"] for p in measured["points"][:3]]
    assert list(strength.x) == [p["task_score"] for p in measured["points"][:3]]
    assert base.y[0] == measured["base"]["probe_right"]
    text = compare_dial.dial_text(measured)
    assert measured["reading"] in text and "3 held-out rows and 5 general questions" in text
    message, chart = compare_dial.do_dial("", "0,1", "", 2, 3, 4)
    assert message.startswith("**Error:** Choose a run first")
