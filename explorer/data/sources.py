"""Where training rows come from: a bundled task's name, or an uploaded file; split into train and held out.

The whole name → rows lookup lives here (file size and row checks included, once).
"""

from __future__ import annotations

from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from .tasks import TASKS, load_examples
from .uploads import ParsedData, parse_upload


def load_dataset(name_or_rows) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) for a bundled task name, an uploaded file path, ParsedData or rows.

    Uploaded data keeps its order: the last 10% (1 to 50 rows) is held out, so reruns match.
    """
    if isinstance(name_or_rows, (str, Path)):
        if str(name_or_rows) in TASKS:
            return load_examples(str(name_or_rows), "train"), load_examples(str(name_or_rows), "heldout")
        path = Path(name_or_rows)
        if not path.is_file():
            raise ExplorerError(f"Unknown dataset {str(name_or_rows)!r}: choose one of {', '.join(TASKS)} "
                                "or upload a JSONL/CSV file.")
        limit = settings.max_upload_bytes()
        if path.stat().st_size > limit:
            raise ExplorerError(f"{path.name} is larger than {limit:,} bytes (EXPLORER_MAX_UPLOAD_MB).")
        name_or_rows = parse_upload(path.read_bytes(), path.name)
    rows = list(name_or_rows.rows if isinstance(name_or_rows, ParsedData) else name_or_rows)
    if len(rows) < 2:
        raise ExplorerError("Need at least 2 valid rows: one to train on and one held out to evaluate.")
    held = max(1, min(50, len(rows) // 10))
    return rows[:-held], rows[-held:]

