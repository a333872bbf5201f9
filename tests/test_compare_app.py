"""The Compare tab in a real browser, and its API through gradio_client."""

import pytest
from conftest import train_run, wait_for_text


@pytest.fixture(scope="module")
def saved_tiny_run(cache):
    return train_run("lora", steps=2, batch_size=2, seq_len=48, learning_rate=0.05, eval_every=5)


def test_api_compare_returns_three_outputs_and_errors_as_messages(app_url, saved_tiny_run):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    result = client.predict(saved_tiny_run, "Ahoy there", 4, api_name="/compare")
    assert set(result["outputs"]) == {"base", "adapted", "merged"} and result["greedy_match"] is True
    bad = client.predict("../etc", "hi", 4, api_name="/compare")
    assert "not a run id" in bad["error"]


def test_browser_compare_shows_three_columns_for_a_saved_run(app_url, saved_tiny_run, page, screenshot):
    page.goto(app_url)
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-run input").click()
    page.get_by_role("option", name=saved_tiny_run, exact=False).first.click()
    page.locator("#compare-prompts textarea").fill("Ahoy, where is the treasure?\n<b>not bold</b>")
    page.locator("#compare-go").click()
    wait_for_text(page, "#compare-output", "Merged (adapter folded into the weights)")
    headers = page.locator("#compare-columns th").all_inner_texts()
    assert headers == ["Base model", "Adapted (adapter active, unmerged)", "Merged (adapter folded into the weights)"]
    assert "<b>not bold</b>" in page.locator("#compare-columns").inner_text(), "prompts show as text, not markup"
    wait_for_text(page, "#compare-fidelity", "greedy outputs match")
    screenshot("compare_tab")
    page.locator("#compare-prompts textarea").fill("")
    page.locator("#compare-go").click()
    wait_for_text(page, "#compare-fidelity", "prompt is empty")
