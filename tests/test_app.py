"""The app launches, answers its API, and works in a real browser."""

from gradio_client import Client

from explorer.models import provision


def test_api_generate_and_models_table(app_url):
    client = Client(app_url, verbose=False)
    reply, stats, table = client.predict(provision.TINY_NAME, "Hello", 4, api_name="/generate")
    assert "4 new tokens" in stats and "tokens/s" in stats
    assert provision.TINY_NAME in str(table)
    reply, stats, _ = client.predict("no-such-model", "Hello", 4, api_name="/generate")
    assert reply == "" and "Unknown model" in stats
    reply, stats, _ = client.predict(provision.TINY_NAME, "", 4, api_name="/generate")
    assert "empty" in stats


def test_browser_prompt_gets_an_answer_from_the_bundled_model(app_url, page, screenshot):
    page.goto(app_url)
    page.get_by_role("tab", name="Models").click()
    page.locator("#gen-prompt textarea").fill("What is the capital of France?")
    page.locator("#gen-button").click()
    reply = page.locator("#gen-reply textarea")
    page.wait_for_function("() => document.querySelector('#gen-reply textarea').value.includes('Paris')",
                           timeout=120_000)
    assert "Paris" in reply.input_value()
    assert "tokens/s" in page.locator("#gen-stats").inner_text()
    screenshot("models_tab")


def test_a_model_added_while_the_server_runs_joins_every_picker(app_url, page, cache, tmp_path):
    """Compare's export (or a folder copied into models_cache) must not need a server restart."""
    import re
    import shutil
    import uuid

    name = f"picker-test-{uuid.uuid4().hex[:8]}"
    added = cache / name
    shutil.copytree(cache / provision.TINY_NAME, added)
    try:
        page.goto(app_url)
        for tab, picker in (("Models", "#gen-model"), ("Fine-tune", "#ft-model"), ("Calculator", "#calc-model")):
            page.get_by_role("tab", name=tab).click()
            page.locator(f"{picker} input").click()
            page.get_by_role("option", name=re.compile(name)).first.wait_for(timeout=20_000)
            page.keyboard.press("Escape")
        shutil.rmtree(added)
        page.get_by_role("tab", name="Models").click()
        page.get_by_role("button", name="Refresh list").click()
        page.wait_for_function("name => !document.querySelector('#models-table').innerText.includes(name)",
                               arg=name, timeout=20_000)
        page.locator("#gen-model input").click()
        page.wait_for_timeout(500)
        assert page.get_by_role("option", name=re.compile(name)).count() == 0
    finally:
        shutil.rmtree(added, ignore_errors=True)


def test_stop_without_a_run_says_there_is_none(app_url):
    client = Client(app_url, verbose=False)
    message = client.predict(api_name="/stop_training")
    assert "No run to stop yet" in message and "run id" not in message
