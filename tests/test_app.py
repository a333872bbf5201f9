"""The app launches, answers its API, and works in a real browser."""

from gradio_client import Client

from explorer import provision


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
