"""Picking a dataset, shared by the Fine-tune and Race tabs: a bundled task, or rows uploaded or pasted (checked
row by row, previewed safely, kept for the worker), with a score for uploaded chat data.

The choices follow the kind of data the chosen method trains on (``Method.data_kind``): chat rows, or, for a
classifier or embedding head, labelled text or paraphrase pairs (explorer.data.labelled)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gradio as gr

from .. import settings
from ..data import health, labelled, shapes, sources, tables, uploads
from ..data.sources import KIND_NEEDS
from ..data.tasks import TASKS
from ..errors import ExplorerError
from ..train import runs
from .common import Latest, error_message, shows_errors

UPLOAD = "__upload__"
SCORE_CHOICES = [("held-out loss only", ""), ("exact match", "exact"), ("contains the reference", "contains"),
                 ("token F1 against the reference", "token_f1"), ("a regular expression", "regex:")]


def bundled(kind: str) -> dict[str, tuple[str, str]]:
    """The bundled datasets of a kind: name -> (title, description)."""
    if kind == "chat":
        return {n: (t.title, t.description + f" Score: {t.score_name}.") for n, t in TASKS.items()}
    return {n: (b.title, b.description) for n, b in labelled.BUNDLED.items() if b.kind == kind}


def describe_dataset(name: str, kind: str = "chat"):
    sets = bundled(kind)
    if name in sets:
        text = sets[name][1]
    elif kind == "chat":
        text = ("Upload or paste chat rows; invalid rows are listed with their line numbers. Pick how held-out "
                "replies are scored against the reference reply (or keep held-out loss only).")
    else:
        text = (f"Upload or paste {KIND_NEEDS[kind].split(', e.g.')[0]}; invalid rows are listed with their line "
                "numbers. The last fifth is held out.")
    return text


def dataset_picked(name: str, kind: str, path, text: str):
    """The dataset dropdown's change: its description (unless it is "Upload or paste" with data already there,
    whose line, rows read or columns to pick, stays) and whether the upload widgets show.

    The browser tests saw this change fire again after other updates, empty ones included (why, in gradio's
    frontend, was not found); the description then replaced "Pick the columns". The upload group's visibility goes
    through a state, whose change event fires only on a new value, so a repeat sends the group no update."""
    kept = name == UPLOAD and (path or (text or "").strip())
    return (gr.skip() if kept else describe_dataset(name, kind)), name == UPLOAD


def dataset_choices(kind: str, current: str | None = None) -> tuple[list, str]:
    """(the dropdown's choices, its value) for a kind of data; the current choice stays when it is of that kind."""
    sets = bundled(kind)
    value = current if current in sets or current == UPLOAD else next(iter(sets))
    return [(f"{title} ({n})", n) for n, (title, _) in sets.items()] + [("Upload or paste", UPLOAD)], value


def read_table(path: str | None, pasted: str) -> tables.Table:
    """The uploaded file (or pasted rows) as a table of records, every upload limit checked."""
    if path:
        limit = settings.max_upload_bytes()
        if Path(path).stat().st_size > limit:
            raise ExplorerError(f"The file is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
        return tables.read_bytes(Path(path).read_bytes(), Path(path).name)
    if (pasted or "").strip():
        return uploads.read_pasted(pasted)
    raise ExplorerError(f"Upload a file ({tables.READABLE}), or paste rows, or pick a bundled dataset.")


def parse_table(table: tables.Table, kind: str = "chat", columns: str = "") -> uploads.ParsedData:
    parsed = uploads.parse_table(table, labelled.FORMATS.get(kind), columns or None)
    if kind == "labelled":
        labelled.check_classes(parsed.rows, parsed.source)
    return parsed


def read_upload(path: str | None, pasted: str, kind: str = "chat", columns: str = "") -> uploads.ParsedData:
    """The upload's rows through ``columns`` (``prompt=Question,response=Answer``; empty: the shape its columns
    are recognised as)."""
    return parse_table(read_table(path, pasted), kind, columns)


def save_upload(path: str | None, pasted: str, kind: str = "chat", columns: str = "") -> tuple[str, uploads.ParsedData]:
    """Check the upload (or pasted rows) and keep its valid rows, with the columns they were read through, in
    models_cache/uploads/ for the worker."""
    parsed = read_upload(path, pasted, kind, columns)
    return str(uploads.keep_for_training(parsed, settings.models_cache() / runs.UPLOADS_DIR)), parsed


def health_lines(parsed: uploads.ParsedData, kind: str) -> list[str]:
    """The data's health in sentences (explorer.data.health), split as training will split it."""
    train, heldout = sources.split_rows(parsed.rows, kind)
    return health.sentences(health.check(train, heldout, kind, parsed.lines))


def _read_as(parsed: uploads.ParsedData, kind: str) -> str:
    """How the columns were read, in words: 'Question' is the user's turn (question), 'Answer' the answer."""
    said = [f"'{column}' is {shapes.PART_WORDS[part]}" for part, column in parsed.columns.items()]
    how = "picked" if parsed.picked else "recognised"
    return f"Columns {how}: {'; '.join(said)}." if said else ""


def data_summary(parsed: uploads.ParsedData, kind: str) -> str:
    """The line under the dataset picker once an upload is read: what was read, how, and its health."""
    n, skipped = len(parsed.rows), len(parsed.errors)
    head = (f"**{n:,} valid row{'' if n == 1 else 's'}** read from {parsed.source} ({parsed.file_kind})"
            + (f"; {skipped:,} skipped (listed below)." if skipped else ".") + " " + _read_as(parsed, kind))
    return "\n".join([head.strip(), *(f"- {line}" for line in health_lines(parsed, kind))])


def _column_updates(table: tables.Table | None, mapping: dict, kind: str) -> list:
    """The three column dropdowns: the file's columns to pick from, the parts chosen; hidden for a file read
    as whole conversations (messages, conversations) and while there is no file."""
    parts = shapes.PICKER_PARTS[kind]
    shown = table is not None and not ({"messages", "conversations"} & set(mapping))
    updates = []
    for i in range(3):
        part = parts[i] if i < len(parts) else None
        if part is None or table is None:
            updates.append(gr.update(visible=False))
            continue
        optional = part == "system"
        choices = ([("(none)", "")] if optional else []) + [(c, c) for c in table.columns]
        label = f"Column with {shapes.PART_WORDS[part]}" + (" (optional)" if optional else "")
        updates.append(gr.update(choices=choices, value=mapping.get(part, "" if optional else None), label=label,
                                 visible=shown))
    return updates


def read_data(path, text, kind="chat", columns=""):
    """The picker's view of an upload, at once: (the three column dropdowns, the columns text, preview,
    skipped rows, the line under the picker). Columns it cannot recognise leave the dropdowns open to pick."""
    empty = uploads.errors_table(uploads.ParsedData([], [], ""))
    try:
        table = read_table(path, text)
    except ExplorerError as error:
        return (*_column_updates(None, {}, kind), gr.skip(), None, empty, error_message(error))
    try:
        parsed = parse_table(table, kind, columns)
    except ExplorerError as error:
        recognised = shapes.recognise(table.columns, kind) if not columns else None
        if columns:  # the parts picked so far stay picked while the others are still missing
            try:
                mapping = shapes.as_spelled(shapes.parse_mapping(columns, kind), table.columns)
            except ExplorerError:
                mapping = {}
        else:
            mapping = recognised[1] if recognised and recognised[0] == kind else {}
        if not columns and recognised is None and table.records:
            line = (f"**Pick the columns** of {table.source} below: which one is "
                    f"{' and which '.join(shapes.PART_WORDS[p] for p in shapes.PICKER_PARTS[kind][:2])}. Its "
                    f"columns: {', '.join(table.columns)[:200]}.")
        else:
            line = error_message(error)
        return (*_column_updates(table, mapping, kind), gr.skip(), None, empty, line)
    return (*_column_updates(table, parsed.columns, kind), gr.skip(), uploads.preview_table(parsed),
            uploads.errors_table(parsed), data_summary(parsed, kind))


def pick_columns(first, second, third, columns, path, text, kind="chat"):
    """A column picked in a dropdown: the mapping text now says it (keeping parts the dropdowns do not show,
    e.g. Alpaca's input), and the preview follows at once."""
    try:
        mapping = shapes.parse_mapping(columns, kind)
        if not mapping:
            recognised = shapes.recognise(read_table(path, text).columns, kind)
            mapping = dict(recognised[1]) if recognised and recognised[0] == kind else {}
    except ExplorerError:
        mapping = {}
    for part, value in zip(shapes.PICKER_PARTS[kind], (first, second, third)):
        if value:
            mapping[part] = value
        else:
            mapping.pop(part, None)
    text_value = shapes.mapping_text(mapping)
    shown = read_data(path, text, kind, text_value)
    return (*shown[:3], text_value, *shown[4:])


@shows_errors(outputs=3, at=2)
def check_data(path, text, kind="chat", columns=""):
    parsed = read_upload(path, text, kind, columns)
    return uploads.preview_table(parsed), uploads.errors_table(parsed), data_summary(parsed, kind)


@lru_cache(maxsize=32)
def _length_lines(model: str, dataset: str, seq_len: int) -> tuple[str, ...]:
    from transformers import AutoTokenizer

    from ..models import registry

    tokenizer = AutoTokenizer.from_pretrained(registry.resolve(model).location, trust_remote_code=False)
    train, heldout = sources.load_dataset(dataset)
    checked = health.measure_lengths(health.check(train, heldout), tokenizer, train, seq_len)
    return tuple(health.sentences(checked)[-1:])


def length_text(config) -> str:
    """For the estimate line: how many training rows the sequence length cuts, with this model's tokenizer
    (chat data only; empty when it cannot be measured here, e.g. a model not on disk yet)."""
    try:
        if sources.dataset_kind(config.dataset) != "chat":
            return ""
        return " ".join(_length_lines(config.model, str(config.dataset), config.seq_len))
    except Exception:  # noqa: BLE001 - the estimate and the data's own line say what is wrong
        return ""


def score_value(choice: str, pattern: str) -> str:
    return f"regex:{pattern or ''}" if choice == "regex:" else (choice or "")



def dataset_value(dataset_name: str, path, text, save: bool, kind: str = "chat", columns: str = "") -> str:
    """What a run's settings hold: the bundled dataset's name, or the path of the kept upload. ``kind``: what the
    method trains on; ``columns``: the column mapping picked (empty: recognised).

    Checking the settings (``save`` False, the estimate line) keeps the upload too: the checks after this one
    (the kind of data the method needs, the tokens per row of the estimate) read the dataset by its path, and
    the upload's bare file name is no dataset: it showed "Unknown dataset 'x.csv'" under every valid upload.
    Kept rows are content-addressed and written once, so checking again writes nothing."""
    known = [*TASKS, *labelled.BUNDLED]
    if dataset_name != UPLOAD and dataset_name not in known:  # the API could name any file otherwise
        raise ExplorerError(f"Unknown dataset '{dataset_name}': choose one of {', '.join(known)}, "
                            "or upload or paste rows.")
    if dataset_name != UPLOAD:
        return dataset_name
    return save_upload(path, text, kind, columns)[0]


picked = Latest()  # (the file, the columns picked for it) of each browser session's picker


def new_file(path, text, data_kind, request: gr.Request = None):
    """The upload's change: another file's columns are picked afresh; the same file again keeps the columns picked.

    The browser fires this change again for the same file at times (after updates to other widgets, seen in the
    browser tests), sometimes before a column just picked has reached the columns box: the columns come from the
    server's own record of the picks, not from the box."""
    last = picked.get(request)
    columns = last[1] if path and last and last[0] == path else ""
    picked.set(request, (path, columns))
    view = read_data(path, text, data_kind, columns)
    return (*view[:3], columns, *view[4:])


def on_column_pick(first, second, third, columns, path, text, kind="chat", request: gr.Request = None):
    """pick_columns, recorded for new_file."""
    view = pick_columns(first, second, third, columns, path, text, kind)
    picked.set(request, (path, view[3]))
    return view


def on_columns_typed(path, text, kind="chat", columns="", request: gr.Request = None):
    """read_data for columns typed in the box, recorded for new_file."""
    picked.set(request, (path, columns))
    return read_data(path, text, kind, columns)


@dataclass
class DatasetPicker:
    dataset: gr.Dropdown
    upload: gr.File
    pasted: gr.Textbox
    score: gr.Dropdown
    pattern: gr.Textbox
    info: gr.Markdown
    kind: gr.State          # the kind of data the chosen method trains on ("chat", "labelled", "pairs")
    group: gr.Group         # the upload widgets, shown for "Upload or paste"
    columns: gr.Textbox     # the column mapping picked, prompt=Question,response=Answer (empty: recognised)
    column_pickers: list    # the three dropdowns that write it: the user's turn, the answer, the system prompt

    @property
    def inputs(self) -> list:
        return [self.dataset, self.upload, self.pasted, self.score, self.pattern]


UPLOAD_TYPES = [".csv", ".tsv", ".txt", ".xlsx", ".jsonl", ".json", ".parquet"]


def dataset_picker(prefix: str) -> DatasetPicker:
    """The dataset dropdown, its description, and the upload group (shown for "Upload or paste"): a file is read
    and previewed as soon as it arrives; columns of no known shape are picked in three dropdowns."""
    dataset = gr.Dropdown([(f"{t.title} ({n})", n) for n, t in TASKS.items()] + [("Upload or paste", UPLOAD)],
                          value="pirate", label="Dataset", elem_id=f"{prefix}-dataset")
    info = gr.Markdown(describe_dataset("pirate"), elem_id=f"{prefix}-dataset-info")
    kind = gr.State("chat")
    with gr.Group(visible=False) as group:
        upload = gr.File(label="Your data: a spreadsheet (CSV, TSV, Excel .xlsx), JSONL, JSON or Parquet; any column "
                         "names", file_types=UPLOAD_TYPES, type="filepath", elem_id=f"{prefix}-upload")
        pasted = gr.Textbox(label="…or paste rows", lines=4, placeholder='{"prompt": "Hi", "response": "Hello!"}')
        with gr.Row():
            pickers = [gr.Dropdown([], label=f"Column {i}", visible=False, interactive=True,
                                   elem_id=f"{prefix}-column-{i}") for i in (1, 2, 3)]
        columns = gr.Textbox(label="Columns used (the command line's --columns)", elem_id=f"{prefix}-columns",
                             placeholder="empty: recognised from the column names, e.g. prompt=Question,response=Answer")
        with gr.Row():
            score = gr.Dropdown(SCORE_CHOICES, value="", label="Score held-out replies by", elem_id=f"{prefix}-score",
                                info="Uploaded data has no task of its own: compare each reply with the reference")
            pattern = gr.Textbox(label="Regular expression (for 'a regular expression')",
                                 elem_id=f"{prefix}-score-pattern", placeholder=r"\barr\b|matey")
        check = gr.Button("Check data", size="sm")
        preview = gr.Dataframe(label="Preview", interactive=False, wrap=True, elem_id=f"{prefix}-preview")
        problems = gr.Dataframe(label="Rows that will be skipped", interactive=False, wrap=True,
                                elem_id=f"{prefix}-problems")
    shown = [*pickers, columns, preview, problems, info]
    upload_shown = gr.State(False)
    dataset.change(dataset_picked, [dataset, kind, upload, pasted], [info, upload_shown], api_visibility="private")
    upload_shown.change(lambda shown: gr.Group(visible=shown), upload_shown, group, api_visibility="private",
                        show_progress="hidden")

    upload.change(new_file, [upload, pasted, kind], shown, api_visibility="private", show_progress="hidden")
    check.click(read_data, [upload, pasted, kind, columns], shown, api_name=f"{prefix}_read_data")
    columns.submit(on_columns_typed, [upload, pasted, kind, columns], shown, api_visibility="private")
    for picker in pickers:
        picker.input(on_column_pick, [*pickers, columns, upload, pasted, kind], shown, api_visibility="private")
    return DatasetPicker(dataset, upload, pasted, score, pattern, info, kind, group, columns, pickers)
