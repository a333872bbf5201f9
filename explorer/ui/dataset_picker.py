"""Picking a dataset, shared by the Fine-tune and Race tabs: a bundled task, or rows uploaded or pasted (checked
row by row, previewed safely, kept for the worker), with a score for uploaded chat data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import settings
from ..data import uploads
from ..data.tasks import TASKS
from ..errors import ExplorerError
from ..train import runs
from .common import shows_errors

UPLOAD = "__upload__"
SCORE_CHOICES = [("held-out loss only", ""), ("exact match", "exact"), ("contains the reference", "contains"),
                 ("token F1 against the reference", "token_f1"), ("a regular expression", "regex:")]


def describe_dataset(name: str):
    if name in TASKS:
        text = TASKS[name].description + f" Score: {TASKS[name].score_name}."
    else:
        text = ("Upload or paste chat rows; invalid rows are listed with their line numbers. Pick how held-out "
                "replies are scored against the reference reply (or keep held-out loss only).")
    return text, gr.Group(visible=(name == UPLOAD))


def read_upload(path: str | None, pasted: str) -> uploads.ParsedData:
    if path:
        limit = settings.max_upload_bytes()
        if Path(path).stat().st_size > limit:
            raise ExplorerError(f"The file is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
        return uploads.parse_upload(Path(path).read_bytes(), Path(path).name)
    if (pasted or "").strip():
        return uploads.parse_pasted(pasted)
    raise ExplorerError("Upload a JSONL or CSV file, or paste rows, or pick a bundled dataset.")


def save_upload(path: str | None, pasted: str) -> tuple[str, uploads.ParsedData]:
    """Check the upload (or pasted rows) and keep its valid rows in models_cache/uploads/ for the worker."""
    parsed = read_upload(path, pasted)
    return str(uploads.keep_for_training(parsed, settings.models_cache() / runs.UPLOADS_DIR)), parsed


@shows_errors(outputs=3, at=2)
def check_data(path, text):
    parsed = read_upload(path, text)
    n = len(parsed.rows)
    return (uploads.preview_table(parsed), uploads.errors_table(parsed),
            f"{n:,} valid row{'' if n == 1 else 's'}; training holds some out, so it needs at least 2.")


def score_value(choice: str, pattern: str) -> str:
    return f"regex:{pattern or ''}" if choice == "regex:" else (choice or "")



def dataset_value(dataset_name: str, path, text, save: bool) -> str:
    """What a run's settings hold: the bundled task's name, or the path of the kept upload (``save``), or the
    upload's name only (checking the settings before anything is written)."""
    if dataset_name != UPLOAD and dataset_name not in TASKS:  # the API could name any file otherwise
        raise ExplorerError(f"Unknown dataset '{dataset_name}': choose one of {', '.join(TASKS)}, "
                            "or upload or paste rows.")
    if dataset_name != UPLOAD:
        return dataset_name
    return save_upload(path, text)[0] if save else str(read_upload(path, text).source)


@dataclass
class DatasetPicker:
    dataset: gr.Dropdown
    upload: gr.File
    pasted: gr.Textbox
    score: gr.Dropdown
    pattern: gr.Textbox
    info: gr.Markdown

    @property
    def inputs(self) -> list:
        return [self.dataset, self.upload, self.pasted, self.score, self.pattern]


def dataset_picker(prefix: str) -> DatasetPicker:
    """The dataset dropdown, its description, and the upload group (shown for "Upload or paste")."""
    dataset = gr.Dropdown([(f"{t.title} ({n})", n) for n, t in TASKS.items()] + [("Upload or paste", UPLOAD)],
                          value="pirate", label="Dataset", elem_id=f"{prefix}-dataset")
    info = gr.Markdown(describe_dataset("pirate")[0])
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
    dataset.change(describe_dataset, dataset, [info, group], api_visibility="private")
    check.click(check_data, [upload, pasted], [preview, problems, info], api_visibility="private")
    return DatasetPicker(dataset, upload, pasted, score, pattern, info)
