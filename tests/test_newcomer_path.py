"""The non-engineer's whole path in one browser session (issue 23): a spreadsheet with its own column names is
uploaded and its columns picked, the tiny model trains on it from the first screen, the page says what it
learned, and the GGUF file and its Ollama Modelfile download from "Use it on your computer"."""

from __future__ import annotations

import csv
import io

from conftest import TINY, wait_for_text
from test_upload_browser import upload_and_pick

ROWS = [("What time do you open on Saturdays?", "Hi there! 7am to 3pm. See you at Rosie's!"),
        ("Do you sell birthday candles?", "Hi there! Yes, 2 dollars a box. See you at Rosie's!"),
        ("Is there parking?", "Hi there! Two spaces behind the shop. See you at Rosie's!"),
        ("Can I order a cake for 12 people?", "Hi there! Yes, 48 hours ahead, 35 dollars. See you at Rosie's!")] * 3


def shop_csv(folder) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Customer asks", "We reply"])
    writer.writerows((f"{q} ({i})", a) for i, (q, a) in enumerate(ROWS))
    path = folder / "shop.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def test_browser_spreadsheet_in_verdict_out_and_a_model_to_take_home(app_url, page, tmp_path, screenshot):
    page.set_default_timeout(120_000)  # a shared 2-core machine under load: a wait, not a limit on speed
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("combobox", name="Model").first.click()
    page.get_by_role("option", name=TINY).click()
    upload_and_pick(page, shop_csv(tmp_path), "Customer asks", "We reply")
    wait_for_text(page, "#ft-dataset-info", "12 valid rows")
    wait_for_text(page, "#ft-recommendation", "Recommended for 12 rows of chat data")
    wait_for_text(page, "#ft-estimate", "Calculator predicts")
    estimate = page.locator("#ft-estimate").inner_text()
    assert "Error" not in estimate and "Unknown dataset" not in estimate and "Nothing can start" not in estimate
    page.locator("#ft-steps input").fill("2")
    page.locator("#ft-start").click()
    wait_for_text(page, "#ft-progress", "Finished", timeout=600_000)
    wait_for_text(page, "#ft-metrics", "What it learned")
    metrics = page.locator("#ft-metrics").inner_text()
    assert "general questions" in metrics and "facts" in metrics, metrics
    assert "Unknown dataset" not in page.locator("#ft-estimate").inner_text()
    assert "Step 0" in page.locator("#ft-timeline").inner_text(), "the watch answered before training"
    run_id = page.locator("#ft-progress").inner_text().split("run ")[-1].strip(" `()")
    page.get_by_text("Use it on your computer").click()
    wait_for_text(page, "#take-home-run", "LoRA on tiny-random-llama")  # the finished run, not "queued"
    page.locator("#take-home-gguf").click()
    wait_for_text(page, "#take-home-commands", "ollama create", timeout=600_000)
    listed = page.locator("#take-home-files").inner_text().replace("\n", "")
    assert ".gguf" in listed and ".Modelfile" in listed and run_id in listed
    with page.expect_download() as download:
        page.locator("#take-home-files tr", has_text=".Modelfile").locator("a").click()
    saved = tmp_path / "downloaded.Modelfile"
    download.value.save_as(saved)
    text = saved.read_text()
    assert "\nFROM ./" in text and "TEMPLATE" in text and "PARAMETER stop" in text
    screenshot("newcomer_path")
