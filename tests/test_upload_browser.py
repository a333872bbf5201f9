"""A spreadsheet with its own column names, in the launched app (issue 23): through the API, the picker reads it
and takes a column mapping; in the browser, the file is previewed as soon as it is uploaded, the columns are
picked in two dropdowns, and the estimate line above Start carries no error."""

from __future__ import annotations

import csv
import io

from conftest import wait_for_text

ROWS = [("What time do you open on Saturdays?", "Hi there! 7am to 3pm. See you at Rosie's!"),
        ("Do you sell birthday candles?", "Hi there! Yes, 2 dollars a box. See you at Rosie's!"),
        ("Is there parking?", "Hi there! Two spaces behind the shop. See you at Rosie's!")] * 4


def bakery_csv(folder) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Frage", "Antwort", "Notiz"])
    writer.writerows((f"{q} ({i})", a, "-") for i, (q, a) in enumerate(ROWS))
    path = folder / "bakery faq.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def upload_and_pick(page, path: str, question: str, answer: str) -> None:
    """In Fine-tune: upload a file whose columns the app does not know, then pick its question and answer."""
    page.get_by_role("combobox", name="Dataset").click()
    page.get_by_role("option", name="Upload or paste").click()
    page.locator("#ft-upload input[type=file]").set_input_files(path)
    wait_for_text(page, "#ft-dataset-info", "Pick the columns")  # read at once: no "Check data" press
    page.get_by_role("combobox", name="Column with the user's turn (question)").click()
    page.get_by_role("option", name=question, exact=True).click()
    page.get_by_role("combobox", name="Column with the answer").click()
    page.get_by_role("option", name=answer, exact=True).click()


def test_the_column_mapping_through_the_api(app_url, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    path = bakery_csv(tmp_path)
    first, _, _, _, preview, _, line = client.predict(handle_file(path), "", "", api_name="/ft_read_data")
    assert "Pick the columns" in line and [c[0] for c in first["choices"]] == ["Frage", "Antwort", "Notiz"]
    _, _, _, _, preview, problems, line = client.predict(handle_file(path), "", "prompt=Frage,response=Antwort",
                                                         api_name="/ft_read_data")
    assert [row[1] for row in preview["data"]][:2] == [f"{q} ({i})" for i, (q, _) in enumerate(ROWS[:2])]
    assert "**12 valid rows** read from bakery faq.csv (CSV)" in line and "'Antwort' is the answer" in line
    assert problems["data"] == [] or problems["data"] == [["", ""]]


def test_browser_upload_with_unfamiliar_columns_picks_them_and_shows_no_error(app_url, page, tmp_path, screenshot):
    page.set_default_timeout(120_000)  # a shared 2-core machine under load: a wait, not a limit on speed
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    upload_and_pick(page, bakery_csv(tmp_path), "Frage", "Antwort")
    wait_for_text(page, "#ft-dataset-info", "12 valid rows")
    wait_for_text(page, "#ft-columns textarea", "prompt=Frage,response=Antwort")
    wait_for_text(page, "#ft-preview", "What time do you open on Saturdays? (0)")
    info = page.locator("#ft-dataset-info").inner_text()
    assert "11 rows for training and 1 held out" in info
    wait_for_text(page, "#ft-estimate", "Calculator predicts", timeout=120_000)
    estimate = page.locator("#ft-estimate").inner_text()
    assert "Error" not in estimate and "Unknown dataset" not in estimate and "Nothing can start" not in estimate
    assert "sequence length" in estimate  # the data's health: how many rows the sequence length cuts
    screenshot("upload_unfamiliar_columns")


def test_the_same_file_again_keeps_the_columns_picked_and_another_file_starts_afresh(tmp_path):
    """The browser fires the upload's change again for the same file at times; that must not clear a pick."""
    from types import SimpleNamespace

    from explorer.ui import dataset_picker

    session = SimpleNamespace(session_hash="one browser tab")
    path = bakery_csv(tmp_path)
    first = dataset_picker.new_file(path, "", "chat", session)
    assert first[3] == "" and "Pick the columns" in first[-1]
    picked = dataset_picker.on_column_pick("Frage", "Antwort", None, "", path, "", "chat", session)
    assert picked[3] == "prompt=Frage,response=Antwort"
    again = dataset_picker.new_file(path, "", "chat", session)
    assert again[3] == "prompt=Frage,response=Antwort" and "12 valid rows" in again[-1]
    (tmp_path / "other").mkdir()
    other = dataset_picker.new_file(bakery_csv(tmp_path / "other"), "", "chat", session)
    assert other[3] == "" and "Pick the columns" in other[-1]
