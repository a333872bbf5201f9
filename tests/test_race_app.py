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
    start_tiny_race(page, app_url)
    wait_for_text(page, "#race-reading", "Claim:", timeout=30_000)
    traces = page.evaluate("() => document.querySelector('#race-live .js-plotly-plot').data"
                           ".filter(t => t.type === 'scatter').length")
    assert traces == 2, "one held-out loss curve per entrant"
    assert page.locator("#race-table [role=grid]").get_attribute("aria-rowcount") == "3", "a header and two rows"
    points = page.evaluate("() => document.querySelector('#race-pareto .js-plotly-plot').data.length")
    assert points >= 2, "a point per finished entrant (and the front's line)"
    screenshot("race_tab")


def start_tiny_race(page, app_url, specs="lora:r=2,ia3") -> str:
    """Start a race of ``specs`` on the tiny model in the page and wait until it is over; its id. The page opens
    on the newest saved race, so the wait is for a race that did not exist before the click."""
    from explorer.race.races import list_races

    page.set_default_timeout(120_000)  # a shared 2-core machine: the page may answer slowly
    page.goto(app_url)
    page.get_by_role("tab", name="Race").click()
    page.locator("#race-model input").fill(TINY)
    page.locator("#race-model input").press("Enter")
    page.locator("#race-entrants textarea").fill(specs)
    page.locator("#race-steps input").fill("3")
    page.get_by_text("Race settings").click()
    for name, value in SMALL.items():
        page.locator(f"#race-{name} input").fill(str(value))
    wait_for_text(page, "#race-estimate", f"{len(specs.split(','))} runs")
    before = [race.race_id for race in list_races()]
    page.locator("#race-start").click()
    return page.wait_for_function(
        """before => { const m = (document.querySelector('#race-progress')?.innerText || '')
                       .match(/Race (\\S+-race-[0-9a-f]{6}): .*the race is over/);
                     return m && !before.includes(m[1]) ? m[1] : null; }""", arg=before, timeout=300_000).json_value()


def shows_the_race(page, url, race_id):
    """A freshly opened page selects the newest finished race, shows its verdict, and exports that race."""
    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_role("tab", name="Race").click()
    page.wait_for_function("id => document.querySelector('#race-pick input')?.value.includes(id)", arg=race_id,
                           timeout=60_000)
    wait_for_text(page, "#race-verdict", "Verdict", timeout=60_000)
    wait_for_text(page, "#race-reading", "Claims of the textbook section", timeout=60_000)
    page.get_by_role("button", name="Export HTML report").click()
    wait_for_text(page, "#race-progress", f"Exported {race_id}.html", timeout=60_000)  # that race, not another


def test_a_finished_race_survives_a_reload_a_second_page_and_a_restart(app_url, page, screenshot, cache):
    from conftest import free_port

    from explorer.ui.app import CSS, build_app

    race_id = start_tiny_race(page, app_url)
    screenshot("race_tab_finished")
    shows_the_race(page, app_url, race_id)                         # a reload
    second = page.context.new_page()
    shows_the_race(second, app_url, race_id)                       # a second browser page
    demo = build_app().queue()                                     # the app restarted: a new server, same folders
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            share=False, css=CSS)
    try:
        shows_the_race(second, url.replace("localhost", "127.0.0.1"), race_id)
    finally:
        demo.close()
    traces = page.evaluate("() => document.querySelector('#race-pareto .js-plotly-plot').data"
                           ".filter(t => t.mode === 'markers').map(t => t.name)")
    assert sorted(name.split(" — ")[0].rstrip(" ★") for name in traces) == ["ia3", "lora:r=2"]
    labels = page.evaluate("() => document.querySelector('#race-pareto .js-plotly-plot').layout.annotations"
                           ".map(a => a.text)")
    assert sorted(labels) == ["ia3", "lora:r=2"], "every point labelled"
