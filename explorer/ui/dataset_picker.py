"""Picking a dataset, shared by the Fine-tune and Race tabs: a bundled task, or rows uploaded or pasted (checked
row by row, previewed safely, kept for the worker), with a score for uploaded chat data.

The choices follow the kind of data the chosen method trains on (``Method.data_kind``): chat rows, or, for a
classifier or embedding head, labelled text or paraphrase pairs (explorer.data.labelled)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import settings
from ..data import labelled, uploads
from ..data.sources import KIND_NEEDS
from ..data.tasks import TASKS
from ..errors import ExplorerError
from ..train import runs
from .common import shows_errors

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
    return text, gr.Group(visible=(name == UPLOAD))


def dataset_choices(kind: str, current: str | None = None) -> tuple[list, str]:
    """(the dropdown's choices, its value) for a kind of data; the current choice stays when it is of that kind."""
    sets = bundled(kind)
    value = current if current in sets or current == UPLOAD else next(iter(sets))
    return [(f"{title} ({n})", n) for n, (title, _) in sets.items()] + [("Upload or paste", UPLOAD)], value


def read_upload(path: str | None, pasted: str, kind: str = "chat") -> uploads.ParsedData:
    fmt = labelled.FORMATS.get(kind)
    if path:
        limit = settings.max_upload_bytes()
        if Path(path).stat().st_size > limit:
            raise ExplorerError(f"The file is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
        parsed = uploads.parse_upload(Path(path).read_bytes(), Path(path).name, fmt)
    elif (pasted or "").strip():
        parsed = uploads.parse_pasted(pasted, fmt)
    else:
        raise ExplorerError("Upload a JSONL or CSV file, or paste rows, or pick a bundled dataset.")
    if kind == "labelled":
        labelled.check_classes(parsed.rows, parsed.source)
    return parsed


def save_upload(path: str | None, pasted: str, kind: str = "chat") -> tuple[str, uploads.ParsedData]:
    """Check the upload (or pasted rows) and keep its valid rows in models_cache/uploads/ for the worker."""
    parsed = read_upload(path, pasted, kind)
    return str(uploads.keep_for_training(parsed, settings.models_cache() / runs.UPLOADS_DIR)), parsed


@shows_errors(outputs=3, at=2)
def check_data(path, text, kind="chat"):
    parsed = read_upload(path, text, kind)
    n = len(parsed.rows)
    need = "2" if kind == "chat" else "4"
    return (uploads.preview_table(parsed), uploads.errors_table(parsed),
            f"{n:,} valid row{'' if n == 1 else 's'}; training holds some out, so it needs at least {need}.")


def score_value(choice: str, pattern: str) -> str:
    return f"regex:{pattern or ''}" if choice == "regex:" else (choice or "")



def dataset_value(dataset_name: str, path, text, save: bool, kind: str = "chat") -> str:
    """What a run's settings hold: the bundled dataset's name, or the path of the kept upload (``save``), or the
    upload's name only (checking the settings before anything is written). ``kind``: what the method trains on."""
    known = [*TASKS, *labelled.BUNDLED]
    if dataset_name != UPLOAD and dataset_name not in known:  # the API could name any file otherwise
        raise ExplorerError(f"Unknown dataset '{dataset_name}': choose one of {', '.join(known)}, "
                            "or upload or paste rows.")
    if dataset_name != UPLOAD:
        return dataset_name
    return save_upload(path, text, kind)[0] if save else str(read_upload(path, text, kind).source)


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

    @property
    def inputs(self) -> list:
        return [self.dataset, self.upload, self.pasted, self.score, self.pattern]


def dataset_picker(prefix: str) -> DatasetPicker:
    """The dataset dropdown, its description, and the upload group (shown for "Upload or paste")."""
    dataset = gr.Dropdown([(f"{t.title} ({n})", n) for n, t in TASKS.items()] + [("Upload or paste", UPLOAD)],
                          value="pirate", label="Dataset", elem_id=f"{prefix}-dataset")
    info = gr.Markdown(describe_dataset("pirate")[0], elem_id=f"{prefix}-dataset-info")
    kind = gr.State("chat")
    with gr.Group(visible=False) as group:
        upload = gr.File(label="JSONL (messages, or prompt/response) or CSV (prompt,response)",
                         file_types=[".jsonl", ".json", ".csv"], type="filepath")
        pasted = gr.Textbox(label="…or paste rows", lines=4, placeholder='{"prompt": "Hi", "response": "Hello!"}')
        with gr.Row():
            score = gr.Dropdown(SCORE_CHOICES, value="", label="Score held-out replies by", elem_id=f"{prefix}-score",
                                info="Uploaded data has no task of its own: compare each reply with the reference")
            pattern = gr.Textbox(label="Regular expression (for 'a regular expression')",
                                 elem_id=f"{prefix}-score-pattern", placeholder=r"\barr\b|matey")
        check = gr.Button("Check data", size="sm")
        preview = gr.Dataframe(label="Preview", interactive=False, wrap=True)
        problems = gr.Dataframe(label="Rows that will be skipped", interactive=False, wrap=True)
    dataset.change(describe_dataset, [dataset, kind], [info, group], api_visibility="private")
    check.click(check_data, [upload, pasted, kind], [preview, problems, info], api_visibility="private")
    return DatasetPicker(dataset, upload, pasted, score, pattern, info, kind, group)
