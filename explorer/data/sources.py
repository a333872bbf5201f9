"""Where training rows come from: a bundled task's name, or an uploaded file; split into train and held out.

The whole name → rows lookup lives here (file size and row checks included, once). Three kinds of rows: chat
rows (every method that generates text), labelled text and paraphrase pairs (feature-extraction heads,
explorer.data.labelled); ``require_kind`` says in one line when a dataset is of the wrong kind for a method.
"""

from __future__ import annotations

from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from . import labelled, tables
from .tasks import TASKS, load_examples
from .uploads import ParsedData, parse_upload

KIND_NEEDS = {  # what a method needs, in words
    "chat": "chat rows (columns prompt,response or question,answer or instruction,input,output, or OpenAI "
            "messages, or ShareGPT conversations; or any two columns picked), e.g. the bundled " + ", ".join(TASKS),
    "labelled": "labelled text (columns text,label), e.g. the bundled topics",
    "pairs": "paraphrase pairs (columns a,b), e.g. the bundled paraphrases",
}
KIND_IS = {  # what a dataset is, in words, with who trains on it
    "chat": "chat data (for the methods that generate text)",
    "labelled": "labelled text (for feature extraction with head_type=classifier)",
    "pairs": "paraphrase pairs (for feature extraction with head_type=embedding)",
}


def bundled_names() -> list[str]:
    return [*TASKS, *labelled.BUNDLED]


def unknown(dataset) -> ExplorerError:
    return ExplorerError(f"Unknown dataset {str(dataset)!r}: choose one of {', '.join(bundled_names())} "
                         f"or upload a file ({tables.READABLE}).")


def dataset_kind(dataset) -> str:
    """ "chat", "labelled" or "pairs": a bundled set's kind, or what an uploaded file's first row holds."""
    name = str(dataset)
    if name in TASKS:
        return "chat"
    if name in labelled.BUNDLED:
        return labelled.BUNDLED[name].kind
    path = Path(name)
    if not path.is_file():
        raise unknown(dataset)
    return labelled.sniff_kind(path)


def require_kind(dataset, kind: str, who: str) -> None:
    """Refuse, in one line, a dataset of another kind than ``kind``, which ``who`` (a method's title) trains on."""
    found = dataset_kind(dataset)
    if found != kind:
        label = Path(str(dataset)).name
        raise ExplorerError(f"{who} needs {KIND_NEEDS[kind]}; '{label}' is {KIND_IS[found]}.")


def load_rows(dataset, kind: str) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) of a dataset of this kind."""
    return load_dataset(dataset) if kind == "chat" else labelled.load(str(dataset), kind)


def load_dataset(name_or_rows) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) of chat data: a bundled task name, an uploaded file path, ParsedData or rows.

    Uploaded data keeps its order: the last 10% (1 to 50 rows) is held out, so reruns match. A file is read
    through the columns its shape is recognised by (explorer.data.shapes); a kept upload is already chat rows.
    """
    if isinstance(name_or_rows, (str, Path)):
        if str(name_or_rows) in TASKS:
            return load_examples(str(name_or_rows), "train"), load_examples(str(name_or_rows), "heldout")
        path = Path(name_or_rows)
        if not path.is_file():
            raise unknown(name_or_rows)
        limit = settings.max_upload_bytes()
        if path.stat().st_size > limit:
            raise ExplorerError(f"{path.name} is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
        name_or_rows = parse_upload(path.read_bytes(), path.name)
    rows = list(name_or_rows.rows if isinstance(name_or_rows, ParsedData) else name_or_rows)
    if len(rows) < 2:
        raise ExplorerError("Need at least 2 valid rows: one to train on and one held out to evaluate.")
    return split_rows(rows, "chat")


def split_rows(rows: list[dict], kind: str) -> tuple[list[dict], list[dict]]:
    """How an upload of this kind is split: chat holds out its last 10% (1 to 50 rows), labelled text and pairs
    their last fifth (explorer.data.labelled.split). Fewer than 2 rows leave nothing to train on."""
    if kind != "chat":
        return labelled.split(rows)
    held = max(1, min(50, len(rows) // 10))
    return rows[:-held], rows[-held:]


def keep_file(path: str | Path, columns: str, kind: str, folder: Path) -> str:
    """A file read through ``columns`` (``prompt=Question,response=Answer``), its rows kept in ``folder`` as the
    page keeps an upload (explorer.data.uploads.keep_for_training, with the columns beside them): the run
    reads the kept rows, and they do not change if the file does."""
    from .uploads import keep_for_training

    path = Path(path)
    if str(path) in bundled_names() or not path.is_file():
        raise ExplorerError(f"--columns reads a file; {str(path)!r} is not one.")
    limit = settings.max_upload_bytes()
    if path.stat().st_size > limit:
        raise ExplorerError(f"{path.name} is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
    parsed = parse_upload(path.read_bytes(), path.name, labelled.FORMATS.get(kind), columns)
    if kind == "labelled":
        labelled.check_classes(parsed.rows, parsed.source)
    return str(keep_for_training(parsed, folder))


def check_readable(dataset, kind: str) -> None:
    """Read an uploaded file whole (bundled sets are known good), so that one which cannot be trained on (no
    rows, columns of no known shape, one class) is refused in one line before a run is made."""
    if str(dataset) not in bundled_names():
        load_rows(dataset, kind)
