"""Data in as people have it (issue 23): every file format and common shape read into the same chat rows, column
mappings (the page's picker, its handlers, the CLI's --columns, remembered with the kept rows), a file of the
wrong kind in one line, and the data's health in plain words. CPU, offline; one tiny one-step run for the CLI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from conftest import TINY

from explorer.data import health, shapes, sources, tables
from explorer.data import uploads as data
from explorer.errors import ExplorerError

QA = [("What time do you open on Saturdays?", "Hi there! 7am to 3pm. See you at Rosie's!"),
      ("Do you sell birthday candles?", "Hi there! Yes, 2 dollars a box. See you at Rosie's!"),
      ("Is there parking?", "Hi there! Two spaces behind the shop. See you at Rosie's!")]
EXPECTED = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]


def csv_text(header: tuple, rows: list[tuple], sep: str = ",") -> bytes:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def excel_bytes(header: tuple, rows: list[tuple]) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows, columns=list(header)).to_excel(buffer, index=False, engine="openpyxl")
    return buffer.getvalue()


def parquet_bytes(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- every format, every shape: same rows


@pytest.mark.parametrize("name, raw", [
    ("bakery.csv", csv_text(("Question", "Answer"), QA)),
    ("bakery.tsv", csv_text(("QUESTION", "answer"), QA, sep="\t")),
    ("bakery.txt", csv_text(("prompt", "response"), QA, sep="\t")),   # sniffed: a tab-separated header
    ("bakery.jsonl", "\n".join(json.dumps({"Input": q, "Output": a}) for q, a in QA).encode()),
    ("bakery.json", json.dumps([{"query": q, "completion": a} for q, a in QA], indent=2).encode()),
    ("bakery.xlsx", excel_bytes(("Question", "Answer"), QA)),
    ("bakery.parquet", parquet_bytes({"question": [q for q, _ in QA], "answer": [a for _, a in QA]})),
    ("chat.jsonl", "\n".join(json.dumps({"messages": r["messages"]}) for r in EXPECTED).encode()),
    ("sharegpt.json", json.dumps([{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
                                  for q, a in QA]).encode()),
    ("messages.parquet", parquet_bytes({"messages": [r["messages"] for r in EXPECTED]})),
])
def test_every_format_and_shape_reads_into_the_same_rows(name, raw):
    parsed = data.parse_upload(raw, name)
    assert parsed.errors == [] and parsed.rows == EXPECTED and not parsed.picked


def test_line_numbers_point_at_the_file_json_array_objects_and_spreadsheet_rows():
    pretty = json.dumps([{"prompt": q, "response": a} for q, a in QA], indent=2).encode()
    assert data.parse_upload(pretty, "p.json").lines == [2, 6, 10]  # where each object starts
    sheet = excel_bytes(("Question", "Answer"), [QA[0], (None, None), QA[1]])  # a blank row in between
    parsed = data.parse_upload(sheet, "s.xlsx")
    assert parsed.lines == [2, 4] and parsed.file_kind == "Excel"  # spreadsheet rows: the header is row 1


def test_alpaca_joins_instruction_and_input_and_a_system_column_comes_first():
    rows = [("Translate to French", "Good morning", "Bonjour", "Be brief."),
            ("Say hello", "", "Hello!", "")]
    parsed = data.parse_upload(csv_text(("Instruction", "Input", "Output", "System Prompt"), rows), "alpaca.csv")
    assert parsed.columns == {"prompt": "Instruction", "response": "Output", "input": "Input",
                              "system": "System Prompt"}
    assert parsed.rows == [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Translate to French\n\nGood morning"},
                      {"role": "assistant", "content": "Bonjour"}]},
        {"messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello!"}]}]


def test_spreadsheet_numbers_are_text_and_json_numbers_are_refused():
    parsed = data.parse_upload(excel_bytes(("question", "answer"), [("2+2?", 4), ("Half of 3?", 1.5)]), "n.xlsx")
    assert [r["messages"][1]["content"] for r in parsed.rows] == ["4", "1.5"]
    bad = data.parse_upload(b'{"question": "2+2?", "answer": 4}\n{"question": "ok", "answer": "yes"}', "n.jsonl")
    assert [(e.line, e.reason) for e in bad.errors] == [(1, '"answer" must be a string, not int')]


def test_sharegpt_speakers_are_mapped_and_unknown_ones_reported():
    good = {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                              {"from": "gpt", "value": "Hello"}]}
    bad = {"conversations": [{"from": "robot", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    parsed = data.parse_upload("\n".join(json.dumps(r) for r in (good, bad)).encode(), "s.jsonl")
    assert [m["role"] for m in parsed.rows[0]["messages"]] == ["system", "user", "assistant"]
    assert parsed.errors[0].reason == "turn 1 is from 'robot' (use human, gpt or system)"


# --------------------------------------------------------------------------- mappings


UNFAMILIAR = csv_text(("Frage", "Antwort", "Notiz"), [(q, a, "x") for q, a in QA])


def test_unfamiliar_columns_are_refused_until_picked_then_read_like_any_other():
    with pytest.raises(ExplorerError, match=r"or pick which column is the user's turn.*found: Frage, Antwort, Notiz"):
        data.parse_upload(UNFAMILIAR, "faq.csv")
    parsed = data.parse_upload(UNFAMILIAR, "faq.csv", columns="prompt=frage, response=ANTWORT")
    assert parsed.rows == EXPECTED and parsed.picked
    assert parsed.columns == {"prompt": "Frage", "response": "Antwort"}  # the file's own spelling
    with pytest.raises(ExplorerError, match=r"faq.csv has no column 'Question'; its columns: Frage, Antwort, Notiz"):
        data.parse_upload(UNFAMILIAR, "faq.csv", columns="prompt=Question,response=Antwort")
    with pytest.raises(ExplorerError, match=r"Pick the columns of faq.csv: which column is the user's turn"):
        data.parse_upload(UNFAMILIAR, "faq.csv", columns="prompt=Frage")
    with pytest.raises(ExplorerError, match=r"'answer=Antwort' is not PART=COLUMN; the parts of chat rows are prompt"):
        data.parse_upload(UNFAMILIAR, "faq.csv", columns="prompt=Frage,answer=Antwort")
    assert shapes.mapping_text(parsed.columns) == "prompt=Frage,response=Antwort"


def test_a_kept_upload_remembers_its_columns_and_reads_back_as_the_same_rows(tmp_path):
    parsed = data.parse_upload(UNFAMILIAR, "faq.csv", columns="prompt=Frage,response=Antwort")
    kept = data.keep_for_training(parsed, tmp_path)
    assert kept.name == "faq.jsonl"
    remembered = data.kept_columns(kept)
    assert remembered["columns"] == {"prompt": "Frage", "response": "Antwort"} and remembered["picked"]
    assert remembered["source"] == "faq.csv" and remembered["file_columns"] == ["Frage", "Antwort", "Notiz"]
    train, heldout = sources.load_dataset(str(kept))
    assert train + heldout == EXPECTED
    before = kept.stat().st_mtime_ns
    assert data.keep_for_training(parsed, tmp_path) == kept and kept.stat().st_mtime_ns == before, "written once"


def test_the_picker_reads_an_upload_at_once_and_a_pick_fills_the_mapping(tmp_path):
    from explorer.ui import dataset_picker

    path = tmp_path / "faq.csv"
    path.write_bytes(UNFAMILIAR)
    first, second, third, columns, preview, _, line = dataset_picker.read_data(str(path), "", "chat", "")
    assert preview is None and "**Pick the columns** of faq.csv" in line
    assert first["visible"] and first["value"] is None and [v for _, v in first["choices"]] == ["Frage", "Antwort",
                                                                                                "Notiz"]
    assert third["choices"][0] == ("(none)", "") and "optional" in third["label"]
    first, second, third, columns, preview, problems, line = dataset_picker.pick_columns(
        "Frage", "Antwort", "", "", str(path), "", "chat")
    assert columns == "prompt=Frage,response=Antwort"
    assert preview["user"].tolist() == [q for q, _ in QA] and problems.empty
    assert "**3 valid rows** read from faq.csv (CSV)" in line and "'Frage' is the user's turn" in line
    assert "Only 2 training rows: the model will mostly memorise them" in line
    # A recognised file needs no pick: its columns show in the dropdowns, the mapping stays empty.
    path.write_bytes(csv_text(("Question", "Answer"), QA))
    first, second, _, columns, preview, _, line = dataset_picker.read_data(str(path), "", "chat", "")
    assert (first["value"], second["value"]) == ("Question", "Answer") and len(preview) == 3
    assert "Columns recognised" in line


def test_a_valid_upload_never_shows_an_error_in_the_estimate_line(cache, tmp_path):
    from explorer.ui import dataset_picker, finetune_tab

    faq = tmp_path / "faq.csv"
    faq.write_bytes(UNFAMILIAR)
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps(r) for r in EXPECTED))
    form = finetune_tab.form_values(TINY, "lora", dataset_picker.UPLOAD, upload=str(chat), steps=3)
    assert "Error" not in finetune_tab.preview_cost(form) and "Calculator predicts" in finetune_tab.preview_cost(form)
    form.update(upload=str(faq), columns="prompt=Frage,response=Antwort")
    line = finetune_tab.preview_cost(form)
    assert "Error" not in line and "Unknown dataset" not in line and "fits in the sequence length (96 tokens)" in line
    # An invalid one still says why: the column it names does not exist.
    form.update(columns="prompt=Question,response=Antwort")
    line = finetune_tab.preview_cost(form)
    assert line.startswith("**Error:** faq.csv has no column &#x27;Question&#x27;; its columns: Frage, Antwort")


# --------------------------------------------------------------------------- the wrong kind, in one line


def test_a_labelled_file_given_to_a_chat_method_gets_one_line_naming_the_classifier_head(cache, tmp_path):
    from explorer.train.config import TrainConfig, check_dataset

    labelled_rows = "\n".join(json.dumps({"Text": f"goal number {i}", "Label": "sports"}) for i in range(5))
    with pytest.raises(ExplorerError) as error:
        data.parse_upload(labelled_rows.encode(), "topics.jsonl", who="LoRA")
    message = str(error.value)
    assert "\n" not in message and 'missing field "prompt"' not in message
    assert message.startswith("topics.jsonl holds labelled text (columns Text, Label), the data of a classifier head "
                              "(method Feature extraction, head_type=classifier); LoRA trains on chat rows.")
    path = tmp_path / "topics.jsonl"
    path.write_text(labelled_rows)
    with pytest.raises(ExplorerError, match="needs chat rows.*'topics.jsonl' is labelled text"):
        check_dataset(TrainConfig(model=TINY, method="lora", dataset=str(path)), {})


# --------------------------------------------------------------------------- health


def rows_of(*pairs) -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]


def test_health_says_the_split_and_warns_of_too_few_rows():
    train, heldout = sources.split_rows(rows_of(("a", "b"), ("c", "d")), "chat")
    said = health.sentences(health.check(train, heldout))
    assert said == ["1 row for training and 1 held out to measure the result (the last 10% of the rows, 1 to 50).",
                    "Only 1 training row: the model will mostly memorise it rather than learn a pattern. Add rows "
                    "(10 at least) for a fairer picture."]
    many = rows_of(*((f"q{i}", f"a{i}") for i in range(30)))
    assert health.sentences(health.check(*sources.split_rows(many, "chat"))) == [
        "27 rows for training and 3 held out to measure the result (the last 10% of the rows, 1 to 50)."]


def test_health_counts_repeats_and_held_out_rows_seen_in_training():
    rows = rows_of(*((f"q{i}", f"a{i}") for i in range(12)), ("q1", "a1"), ("Q1 ", " a1"), ("q11", "a11"))
    train, heldout = sources.split_rows(rows, "chat")  # 14 train, the last 1 held out (a repeat of row 12)
    found = health.check(train, heldout, "chat", lines=list(range(2, 17)))
    assert found.repeated_lines == [14, 15, 16] and found.leaked == 1
    said = health.sentences(found)
    assert "3 rows repeat an earlier row (lines 14, 15, 16; case and spacing ignored)" in said[1]
    assert said[2] == ("1 held-out row also occurs in training: the held-out result will look better than what the "
                       "model learned.")


def test_health_counts_rows_the_sequence_length_cuts(cache):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cache / TINY)
    rows = rows_of(*((f"q{i}", "short") for i in range(10)), ("tell me", "word " * 80), ("x " * 100, "lost"))
    found = health.measure_lengths(health.check(rows, []), tokenizer, rows, 48)
    assert (found.too_long, found.reply_lost) == (2, 1)
    assert health.sentences(found)[-1] == (
        "2 of 12 training rows are longer than the sequence length (48 tokens): they will be cut at 48 tokens, and "
        "the end of their reply is not learned; 1 row loses the whole reply and will be skipped. A larger seq_len "
        "(Advanced) keeps them whole.")
    fits = health.measure_lengths(health.check(rows[:10], []), tokenizer, rows[:10], 48)
    assert health.sentences(fits)[-1] == "Every training row fits in the sequence length (48 tokens)."


# --------------------------------------------------------------------------- hostile spreadsheets


def test_an_xlsx_zip_bomb_is_refused_from_its_directory_without_inflating(monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b" " * 200_000_000)
    raw = buffer.getvalue()
    assert len(raw) < data.MAX_UPLOAD_BYTES
    import openpyxl

    monkeypatch.setattr(openpyxl, "load_workbook", lambda *a, **k: pytest.fail("a bomb reached openpyxl"))
    with pytest.raises(ExplorerError, match=r"bomb.xlsx unpacks to 200,000,000 bytes \(the limit is 125,000,000"):
        data.parse_upload(raw, "bomb.xlsx")


@pytest.mark.parametrize("raw, name, message", [
    (b"prompt,response\nhi,yo\n", "plain.xlsx", "is not an Excel workbook"),
    (b"PAR1garbagePAR1", "bad.parquet", "could not be read as Parquet"),
    (b"prompt,response\nhi,yo\n", "plain.parquet", "is not a Parquet file"),
    (excel_bytes(("Question", "Answer"), QA), "sheet.csv", "looks like a zip or binary file"),
])
def test_damaged_or_misnamed_spreadsheets_get_one_line(raw, name, message):
    with pytest.raises(ExplorerError, match=message):
        data.parse_upload(raw, name)


def test_row_limit_applies_to_spreadsheets_and_parquet(monkeypatch):
    monkeypatch.setenv("EXPLORER_MAX_UPLOAD_ROWS", "2")
    with pytest.raises(ExplorerError, match="Too many rows"):
        data.parse_upload(excel_bytes(("Question", "Answer"), QA), "s.xlsx")
    with pytest.raises(ExplorerError, match=r"Too many rows \(3\)"):
        data.parse_upload(parquet_bytes({"question": [q for q, _ in QA], "answer": [a for _, a in QA]}), "s.parquet")
    assert tables.KIND_NAMES["parquet"] == "Parquet"


# --------------------------------------------------------------------------- the command line


def test_cli_train_reads_a_file_through_columns(cache, tmp_path, capsys):
    from explorer.cli.main import main
    from explorer.train import runs

    faq = tmp_path / "faq.csv"
    faq.write_bytes(csv_text(("Frage", "Antwort"), [(f"{q} ({i})", a) for i in range(4) for q, a in QA]))
    common = ["train", "--model", TINY, "--method", "lora", "--dataset", str(faq), "--steps", "1", "--set",
              "eval_examples=0", "--set", "probe_examples=0", "--set", "seq_len=48", "--json"]
    assert main(common) == 2
    assert "pick which column is the user's turn" in capsys.readouterr().err
    assert main([*common, "--columns", "prompt=Frage,response=Nope"]) == 2
    assert capsys.readouterr().err.strip() == "error: faq.csv has no column 'Nope'; its columns: Frage, Antwort."
    assert main([*common, "--columns", "prompt=Frage,response=Antwort"]) == 0
    result = json.loads(capsys.readouterr().out)
    kept = Path(runs.read_run(runs.run_path(result["run_id"])).config.dataset)
    assert kept.name == "faq.jsonl" and data.kept_columns(kept)["columns"] == {"prompt": "Frage", "response": "Antwort"}
    train, heldout = sources.load_dataset(str(kept))
    assert train + heldout == data.parse_upload(faq.read_bytes(), "faq.csv", columns="prompt=Frage,response=Antwort").rows


def test_a_first_pick_stays_picked_while_the_answer_is_still_missing(tmp_path):
    from explorer.ui import dataset_picker

    path = tmp_path / "faq.csv"
    path.write_bytes(UNFAMILIAR)
    first, second, _, columns, preview, _, line = dataset_picker.pick_columns(None, "Antwort", "", "", str(path), "",
                                                                              "chat")
    assert columns == "response=Antwort" and preview is None and "Pick the columns of faq.csv" in line
    assert (first["value"], second["value"]) == (None, "Antwort")
    first, second, *_ = dataset_picker.pick_columns("Frage", "Antwort", "", columns, str(path), "", "chat")
    assert (first["value"], second["value"]) == ("Frage", "Antwort")


def test_labelled_text_with_its_own_column_names_is_picked_as_text_and_label(tmp_path):
    from explorer.ui import dataset_picker

    path = tmp_path / "reviews.xlsx"
    path.write_bytes(excel_bytes(("Sentence", "Topic"), [("Goal!", "sports"), ("Rain again", "weather")] * 3))
    first, second, third, _, preview, _, line = dataset_picker.read_data(str(path), "", "labelled", "")
    assert first["label"] == "Column with the text" and second["label"] == "Column with the label"
    assert not third["visible"] and preview is None and "which one is the text and which the label" in line
    *_, columns, preview, _, line = dataset_picker.pick_columns("Sentence", "Topic", None, "", str(path), "", "labelled")
    assert columns == "text=Sentence,label=Topic" and preview["label"].tolist()[:2] == ["sports", "weather"]
    assert "4 rows for training and 2 held out to measure the result (the last fifth, 2 to 200)" in line
    one = health.check(*sources.split_rows([{"a": "x", "b": "y"}], "pairs"), "pairs")
    assert health.sentences(one)[1] == "No row is left to train on: a head needs at least 4 rows, 2 of them held out."
