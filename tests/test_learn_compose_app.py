"""The Learn tab's composition, serving and mixture sections and Compare's strength slider: the handlers without a
browser, the reading of measured against claimed, and the pages in a real browser."""

import pytest
from conftest import train_run, wait_for_text

from explorer.compare import compose_report
from explorer.ui import learn_mixture, learn_serving


@pytest.fixture(scope="module")
def tiny_runs(two_step_loras):
    return {"lora-pirate": two_step_loras[0], "lora-french": two_step_loras[1],
            "prefix-pirate": train_run("prefix", "pirate", {"num_virtual_tokens": 2}, steps=1),
            "prefix-french": train_run("prefix", "french", {"num_virtual_tokens": 3}, steps=1)}


def result(method, how, combined, own, runs=("a", "b")):
    """A composition result as explorer.compare.compose returns it (only the fields the report reads)."""
    return {"method": method, "how": how, "weights": [1.0, 1.0], "runs": list(runs), "datasets": ["pirate", "french"],
            "combined": {}, "scores": {"combined": dict(zip(["pirate", "french"], combined))},
            "interference": {d: c - o for d, c, o in zip(["pirate", "french"], combined, own)}}


# --------------------------------------------------------------------------- without a browser


def test_reading_says_whether_the_measurements_support_the_claim():
    assert "Nothing measured yet" in compose_report.reading([])
    rows = compose_report.add([], result("lora", "cat", (0.0, 1.0), (1.0, 1.0)))
    rows = compose_report.add(rows, result("lora", "svd", (0.5, 1.0), (1.0, 1.0)))
    text = compose_report.reading(rows)
    assert "LoRA (svd)" in text and "interference at worst -0.50" in text, "LoRA's best combination is shown"
    assert "Measure LoRA and at least one of prompt or prefix tuning" in text
    better = compose_report.add(rows, result("prefix", "kv_concat", (1.0, 0.75), (1.0, 1.0), runs=("c", "d")))
    assert "this supports the claim" in compose_report.reading(better)
    worse = compose_report.add(rows, result("prefix", "kv_concat", (0.0, 0.0), (1.0, 1.0), runs=("c", "d")))
    assert "this does not support the claim" in compose_report.reading(worse)
    again = compose_report.add(worse, result("prefix", "kv_concat", (1.0, 1.0), (1.0, 1.0), runs=("c", "d")))
    assert len(again) == len(worse), "the same experiment replaces its row"


def test_serving_and_mixture_handlers_answer_with_one_clear_line(tiny_runs):
    out = learn_serving.do_serve([], "hi", 4, False, "llama-2-7b")
    assert out[0].startswith("**Error:** Choose one or more finished LoRA runs")
    out = learn_serving.do_serve([tiny_runs["lora-pirate"], tiny_runs["prefix-pirate"]], "hi", 4, False, "llama-2-7b")
    assert "uses Prefix tuning (prefix)" in out[0]
    listed = [value for _, value in learn_serving.servable_runs()]
    assert tiny_runs["lora-pirate"] in listed and tiny_runs["prefix-pirate"] not in listed
    steps = list(learn_mixture.learn([tiny_runs["lora-pirate"]], "french", 2, 1, 1))
    assert steps[-1][0].startswith("**Error:** A learned mixture needs at least two runs")


# --------------------------------------------------------------------------- in a browser


def pick(page, selector, option):
    """Choose an option of a dropdown (again for each value of a multiselect: the box is left first, since a
    click on a focused multiselect does not open its list again)."""
    box = page.locator(f"{selector} input")
    box.blur()
    box.click()
    page.get_by_role("option", name=option, exact=False).first.click()


def test_browser_one_base_many_adapters(app_url, page, screenshot, tiny_runs):
    page.goto(app_url)
    page.get_by_role("tab", name="Learn").click()
    page.locator("#serve-refresh").click()
    for name in ("lora-pirate", "lora-french"):
        pick(page, "#serve-runs", tiny_runs[name])
    page.locator("#serve-prompts textarea").fill("Ahoy\n<b>not bold</b>")
    page.locator("#serve-go").click()
    wait_for_text(page, "#serve-summary", "every reply equals that adapter's own greedy reply", timeout=180_000)
    assert "<b>not bold</b>" in page.locator("#serve-columns").inner_text(), "prompts show as text"
    wait_for_text(page, "#serve-costs", "The Calculator")
    assert page.evaluate("() => document.querySelector('#serve-calculator .js-plotly-plot').data.length") == 3
    screenshot("learn_serving")


def test_browser_learned_mixture_and_prefix_composition(app_url, page, screenshot, tiny_runs):
    page.goto(app_url)
    page.get_by_role("tab", name="Learn").click()
    page.locator("#mixture-refresh").click()
    for name in ("lora-pirate", "lora-french"):
        pick(page, "#mixture-runs", tiny_runs[name])
    for field, value in (("shots", 2), ("iterations", 2)):
        box = page.locator(f"#mixture-{field} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
    page.locator("#mixture-go").click()
    wait_for_text(page, "#mixture-summary", "the largest weight", timeout=240_000)
    assert page.locator("#mixture-weights [role=grid]").get_attribute("aria-rowcount") == "3"
    screenshot("learn_mixture")

    page.locator("#compose-refresh").click()
    pick(page, "#compose-a", tiny_runs["prefix-pirate"])
    pick(page, "#compose-b", tiny_runs["prefix-french"])
    pick(page, "#compose-how", "kv_concat")
    page.locator("#compose-go").click()
    wait_for_text(page, "#compose-summary", "Combining the two key/value prefixes (kv_concat", timeout=180_000)
    wait_for_text(page, "#compose-table", "kv_concat")
    wait_for_text(page, "#compose-reading", "Prefix tuning (kv_concat)")
    screenshot("learn_compose_prefix")


def test_browser_compare_strength_slider(app_url, page, tiny_runs):
    page.goto(app_url)
    page.get_by_role("tab", name="Compare").click()
    pick(page, "#compare-run", tiny_runs["lora-pirate"])
    page.locator("#compare-prompts textarea").fill("Ahoy there")
    page.locator("#compare-go").click()
    wait_for_text(page, "#compare-fidelity", "greedy outputs match", timeout=120_000)
    box = page.locator("#compare-strength input[type=number]")
    box.fill("0")
    box.press("Tab")  # the slider's release: the replies update
    wait_for_text(page, "#compare-fidelity", "Adapter strength 0", timeout=120_000)
    cells = page.locator("#compare-columns tr").nth(2).locator("td").all_inner_texts()
    assert cells[1] == cells[0], "strength 0: the adapted reply is the base's"
