"""Hostile uploads (issue 6): oversized files, zip bombs, invalid UTF-8, CSV formula injection, HTML
and JS, junk rows, empty files. Each gets a clear message; previews show text, never markup."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import zipfile
import zlib
from pathlib import Path

import pytest

from explorer import generate
from explorer.data import sources, tables
from explorer.data import uploads as data
from explorer.errors import ExplorerError

# --------------------------------------------------------------------------- 2. uploads


def rows(*objs) -> bytes:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs).encode()


GOOD = {"prompt": "Hi", "response": "Hello"}


def test_oversized_upload_and_paste_are_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(tables, "read_text", lambda *a: pytest.fail("an oversized upload was parsed"))
    big = b"x" * (data.MAX_UPLOAD_BYTES + 1)
    with pytest.raises(ExplorerError, match=r"train.jsonl is 5,000,001 bytes; the limit is 5,000,000"):
        data.parse_upload(big, "../../train.jsonl")
    with pytest.raises(ExplorerError, match=r"pasted text is 5,000,002 bytes; the limit is 5,000,000"):
        data.parse_pasted("é" * (data.MAX_UPLOAD_BYTES // 2 + 1))  # counted in UTF-8 bytes, not characters


def test_oversized_file_on_disk_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    with path.open("wb") as handle:
        handle.truncate(data.MAX_UPLOAD_BYTES + 1)  # sparse
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("an oversized file was read"))
    with pytest.raises(ExplorerError, match="big.jsonl is larger than 5,000,000 bytes"):
        sources.load_dataset(str(path))


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.jsonl", b"\n" * 50_000_000)
    return buffer.getvalue()


@pytest.mark.parametrize("make, message", [
    (_zip_bomb, "looks like a zip or binary file"),
    (lambda: gzip.compress(b"0" * 50_000_000), "looks like a zip or binary file"),
    (lambda: lzma.compress(b"0" * 10_000_000), "looks like a zip or binary file"),
    (lambda: bz2.compress(b"0" * 10_000_000), "looks like a zip or binary file"),
    (lambda: bytes(range(1, 256)) * 100, "is not UTF-8 text"),
], ids=["zip-bomb", "gzip-bomb", "xz", "bz2", "binary-without-nul"])
@pytest.mark.parametrize("name", ["train.jsonl", "train.csv", "train"])
def test_compressed_or_binary_upload_is_refused_without_decompressing(monkeypatch, make, message, name):
    raw = make()
    assert len(raw) < data.MAX_UPLOAD_BYTES
    for module, attribute in [(zlib, "decompress"), (zlib, "decompressobj"), (gzip, "decompress"),
                              (gzip, "GzipFile"), (lzma, "decompress"), (bz2, "decompress"), (zipfile, "ZipFile")]:
        monkeypatch.setattr(module, attribute, lambda *a, **k: pytest.fail("an upload was decompressed"))
    with pytest.raises(ExplorerError, match=message) as error:
        data.parse_upload(raw, name)
    assert str(error.value).startswith(name)


@pytest.mark.parametrize("raw, message", [
    (b'{"prompt": "caf\xe9", "response": "x"}', r"train.jsonl is not UTF-8 text \(invalid byte at offset 15\)"),
    (b"prompt,response\n\xc3\x28,x\n", r"train.jsonl is not UTF-8 text \(invalid byte at offset 16\)"),
    (b'{"prompt": "ok"}\xed\xa0\x80', "is not UTF-8 text"),  # an encoded surrogate is not UTF-8 either
    ("prompt,response\nhi,yo\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff" + "prompt,response\nhi,yo\n".encode("utf-16-be"), "is UTF-16 text"),
], ids=["latin-1", "bad-sequence", "encoded-surrogate", "utf-16-le", "utf-16-be"])
def test_invalid_utf8(raw, message):
    with pytest.raises(ExplorerError, match=message):
        data.parse_upload(raw, "train.jsonl")


def test_lone_surrogates_from_json_escapes_are_row_errors():
    parsed = data.parse_upload(rows(GOOD, {"prompt": "bad \ud800 char", "response": "x"},
                                    '{"prompt": "\\udfff", "response": "y"}'), "t.jsonl")
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (2, "message 1 content has an invalid character at position 4 (a lone surrogate)"),
        (3, "message 1 content has an invalid character at position 0 (a lone surrogate)")]
    pasted = data.parse_pasted("prompt,response\nhi \udc80,yo\nok,fine\n")
    assert pasted.errors[0].reason.endswith("(a lone surrogate)") and len(pasted.rows) == 1
    with pytest.raises(ExplorerError, match="invalid character at position 3"):
        generate.check_prompt("abc\ud800")


FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A9)", "=HYPERLINK(\"http://evil\",\"x\")", "\t=1", "\r=1"]


def test_csv_formula_cells_are_neutralised_in_previews():
    lines = "".join(f'"{f.replace(chr(34), chr(34) * 2)}","{f.replace(chr(34), chr(34) * 2)}"\n' for f in FORMULAS)
    parsed = data.parse_upload(("prompt,response\n" + lines).encode(), "f.csv")
    assert parsed.errors == [] and len(parsed.rows) == len(FORMULAS)
    table = data.preview_table(parsed)
    for column in ("user", "assistant"):
        assert table[column].tolist() == ["'" + f for f in FORMULAS]
    # The training rows keep the text exactly: only what is displayed is neutralised.
    assert [r["messages"][0]["content"] for r in parsed.rows] == FORMULAS
    # A truncated long cell is still neutralised (the quote goes before the cut text).
    assert data.safe_cell("=" + "A" * 500, 10) == "'=" + "A" * 9 + "…"


def test_error_reasons_never_start_like_a_formula():
    hostile = rows(GOOD, {"messages": [{"role": "=cmd()", "content": "x"}]}, "=1+2", "@x", "+3", "-4",
                   {"prompt": "=1", "response": 5}, {"messages": [{"role": "user", "content": "=2"}]})
    table = data.errors_table(data.parse_upload(hostile, "t.jsonl"))
    assert len(table) == 7
    assert not any(reason[:1] in "=+-@\t\r" for reason in table["reason"])
    assert table["reason"][0] == "message 1 has unknown role '=cmd()' (use system, user or assistant)"


HTML = ["<script>alert(1)</script>", "<img src=x onerror=alert(document.cookie)>",
        "</td><td onmouseover=alert(1)>", "<a href=\"javascript:alert(1)\">x</a>", "&lt;b&gt; &amp;"]


def test_html_and_js_stay_plain_text_in_previews_and_prompts():
    import gradio as gr

    parsed = data.parse_upload(rows(*({"prompt": h, "response": h} for h in HTML)), "x.jsonl")
    table = data.preview_table(parsed)
    # Cells are the exact strings (not escaped, not parsed): gr.Dataframe's default "str" datatype
    # renders them as text, so escaping here would show "&lt;" to the user instead.
    assert table["user"].tolist() == HTML and table["assistant"].tolist() == HTML
    assert all(type(v) is str for v in table["user"])
    shown = gr.Dataframe(label="Preview", interactive=False, wrap=True)  # as explorer/ui/finetune_tab.py builds it
    assert shown.datatype == "str"
    assert [row[1] for row in shown.postprocess(table).data] == HTML
    assert [r["messages"][0]["content"] for r in parsed.rows] == HTML
    for text in HTML:
        assert generate.check_prompt(text) == text


def test_rows_with_wrong_types_get_one_reason_each():
    raw = rows(
        GOOD,
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"content": "no role"}, {"role": "assistant", "content": "x"}]},
        {"messages": {"role": "user", "content": "x"}},
        {"messages": [["user", "hi"], ["assistant", "yo"]]},
        {"prompt": 1, "response": 2},
        {"prompt": ["a"], "response": "b"},
        {"prompt": None, "response": "b"},
        {"messages": [{"role": "user", "content": {"nested": [1, {"junk": None}]}}]},
        "true",
        '{"messages": NaN}',
        '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + ', "response": "x"}',
        '{"prompt": ' + "1" * 5000 + ', "response": "x"}',
        {"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": []},
        {"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "late"},
                      {"role": "assistant", "content": "a"}]},
    )
    parsed = data.parse_upload(raw, "t.jsonl")
    assert len(parsed.rows) == 1 and parsed.lines == [1]
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (2, "message 1 content must be a string, not int"),
        (3, "message 1 has unknown role 'None' (use system, user or assistant)"),
        (4, '"messages" must be a list, not dict'),
        (5, "message 1 must be an object with role and content"),
        (6, '"prompt" must be a string, not int'),
        (7, '"prompt" must be a string, not list'),
        (8, 'missing field "prompt" (need "messages", or "prompt" and "response")'),
        (9, "message 1 content must be a string, not dict"),
        (10, "not a JSON object (got bool)"),
        (11, '"messages" must be a list, not float'),
        (12, "JSON nested too deeply"),
        (13, "not valid JSON (a number has too many digits)"),
        (14, "message 1 (user) has empty content"),
        (15, "the last message must be from the assistant (it is what the model learns)"),
        (16, '"messages" is empty'),
        (17, "message 2: a system message may only come first"),
    ]


def test_csv_messages_cells_with_junk():
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for cell in ["messages", json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
                 "[" * 100_000, "9" * 5000, "{oops", "[1, 2]"]:
        writer.writerow([cell])
    parsed = data.parse_upload(buffer.getvalue().encode(), "m.csv")
    assert len(parsed.rows) == 1
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (3, "messages cell is JSON nested too deeply"),
        (4, "messages cell is not valid JSON (a number has too many digits)"),
        (5, "messages cell is not valid JSON (Expecting property name enclosed in double quotes)"),
        (6, "message 1 must be an object with role and content"),
    ]


def test_extremely_long_lines():
    long_field = rows(GOOD, {"prompt": "a" * 4_000_000, "response": "x"})
    parsed = data.parse_upload(long_field, "t.jsonl")
    assert parsed.errors[0].reason == "message 1 content is 4,000,000 characters (limit 20,000)"
    with pytest.raises(ExplorerError, match=r"No valid rows in t.jsonl \(JSONL\). line 1: not valid JSON"):
        data.parse_upload(b"{" + b"a" * 4_900_000, "t.jsonl")
    with pytest.raises(ExplorerError, match=r"CSV error at line 2: field larger than field limit"):
        data.parse_upload(b'prompt,response\n"' + b"b" * 1_000_000 + b'",x\n', "t.csv")
    with pytest.raises(ExplorerError, match="Could not read the CSV header: field larger than field limit"):
        data.parse_upload(b'"' + b"h" * 1_000_000 + b'"\n', "t.csv")
    with pytest.raises(ExplorerError, match=r"The CSV header needs prompt and response columns.*found: h{100}"):
        data.parse_upload(b"h" * 1000 + b"\nx\n", "t.csv")


@pytest.mark.parametrize("raw", [b"", b"   ", b" \n\t\r\n \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n ",
                                 "\u3000\u2003\n".encode()])
@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv"])
def test_empty_and_whitespace_only_files(raw, name):
    with pytest.raises(ExplorerError, match=f"^{name} is empty.$"):
        data.parse_upload(raw, name)


@pytest.mark.parametrize("text", [None, "", "  \n\t ", "\ufeff"])
def test_empty_paste(text):
    with pytest.raises(ExplorerError, match="^pasted text is empty.$"):
        data.parse_pasted(text)


def test_header_only_csv_and_blank_lines_jsonl():
    with pytest.raises(ExplorerError, match=r"No valid rows in h.csv \(CSV\). No data rows found."):
        data.parse_upload(b"prompt,response\n\n , \n", "h.csv")
    # A JSON array in a .jsonl file is read as the array it is; its row keeps the line it starts on.
    parsed = data.parse_upload(b"\n\n  [{\"prompt\": \"a\", \"response\": \"b\"}]", "h.jsonl")
    assert parsed.lines == [3] and parsed.rows[0]["messages"][1]["content"] == "b"


def test_a_table_of_thousands_of_columns_is_refused_before_the_column_picker_lists_them():
    header = ",".join(f"c{i}" for i in range(1001))
    with pytest.raises(ExplorerError, match=r"^wide.csv has 1,001 columns; training data has a few \(the limit is 1,000\)"):
        data.parse_upload(f"{header}\n{header}\n".encode(), "wide.csv")
    wide = "\n".join(json.dumps({f"k{i}": "x", "prompt": "p", "response": "r"}) for i in range(1001))
    with pytest.raises(ExplorerError, match="wide.jsonl has 1,003 columns"):
        data.parse_upload(wide.encode(), "wide.jsonl")
