"""The Race tab through its API (gradio_client) and in a real browser, on the tiny model."""

import json

from conftest import TINY, wait_for_text

SMALL = {"batch_size": 2, "seq_len": 64, "eval_every": 2, "eval_examples": 2, "probe_examples": 3,
         "max_new_tokens": 4}


def test_api_runs_a_race_of_three_entrants_through_the_worker(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    result = client.predict(TINY, "pirate", "lora,lora:r=1,ia3", 3, json.dumps(SMALL), 600, api_name="/race")
    assert [e["name"] for e in result["entrants"]] == ["lora", "lora:r=1", "ia3"]
    for entrant in result["entrants"]:
        assert entrant["state"] == "done" and entrant["trainable_params"] == entrant["calculator_trainable_params"]
        assert isinstance(entrant["heldout_loss_last"], float) and isinstance(entrant["pareto"], bool)
    bad = client.predict(TINY, "pirate", "lora:r=0", 3, "{}", 60, api_name="/race")
    assert bad == {"error": bad["error"]} and "r must be between 1 and" in bad["error"]


def test_browser_two_entrant_race_shows_curves_table_and_pareto_chart(app_url, page, screenshot):
    page.goto(app_url)
    page.get_by_role("tab", name="Race").click()
    page.locator("#race-model input").fill(TINY)
    page.locator("#race-model input").press("Enter")
    page.locator("#race-entrants textarea").fill("lora:r=2,ia3")
    page.locator("#race-steps input").fill("3")
    page.get_by_text("Race settings").click()
    for name, value in SMALL.items():
        page.locator(f"#race-{name} input").fill(str(value))
    wait_for_text(page, "#race-estimate", "2 runs")
    page.locator("#race-start").click()
    wait_for_text(page, "#race-progress", "the race is over", timeout=300_000)
    wait_for_text(page, "#race-reading", "Claim:", timeout=30_000)
    traces = page.evaluate("() => document.querySelector('#race-live .js-plotly-plot').data"
                           ".filter(t => t.type === 'scatter').length")
    assert traces == 2, "one held-out loss curve per entrant"
    assert page.locator("#race-table [role=grid]").get_attribute("aria-rowcount") == "3", "a header and two rows"
    points = page.evaluate("() => document.querySelector('#race-pareto .js-plotly-plot').data.length")
    assert points >= 2, "a point per finished entrant (and the front's line)"
    screenshot("race_tab")
