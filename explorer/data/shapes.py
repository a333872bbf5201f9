"""Which column means what: the common shapes of training data recognised without renaming, a column mapping
(``prompt=Question,response=Answer``, the same in the CLI's --columns, the page's column picker and a kept
upload's columns.json), and chat rows built from a record through it.

Recognised, case-insensitively (spaces, '-' and '_' alike):
    prompt/response, question/answer, input/output, query/completion ...   a user turn and its reply
    instruction/input/output (Alpaca)     instruction and input joined into the user turn
    messages (OpenAI)                     a list of {"role", "content"}
    conversations (ShareGPT)              a list of {"from": "human"|"gpt"|"system", "value"}
    system (optional)                     a system prompt put first
    text/label                            labelled text, for a classifier head
    a/b, sentence1/sentence2, anchor/positive   paraphrase pairs, for an embedding head
Alpaca's own template puts the input under "### Input:" after the instruction
(https://github.com/tatsu-lab/stanford_alpaca, PROMPT_DICT); here the two are joined by a blank line and the
model's own chat template frames the turn.
"""

from __future__ import annotations

import json
import re

from ..errors import ExplorerError

ROLES = ("system", "user", "assistant")
MAX_FIELD_CHARS = 20_000
# The parts of a row each kind of data has, in the order the column picker shows them.
PARTS = {"chat": ("prompt", "response", "system", "input", "messages", "conversations"),
         "labelled": ("text", "label"), "pairs": ("a", "b")}
PICKER_PARTS = {"chat": ("prompt", "response", "system"), "labelled": ("text", "label"), "pairs": ("a", "b")}
PART_WORDS = {"prompt": "the user's turn (question)", "response": "the answer", "system": "the system prompt",
              "input": "extra input joined to the user's turn", "messages": "the messages", "conversations":
              "the conversation", "text": "the text", "label": "the label", "a": "a sentence", "b": "its paraphrase"}
_PROMPT = ("prompt", "question", "instruction", "input", "query", "user")
_RESPONSE = ("response", "answer", "output", "completion", "reply", "assistant")
_SYSTEM = ("system", "system_prompt")
_PAIRS = (("a", "b"), ("sentence1", "sentence2"), ("anchor", "positive"), ("text1", "text2"))
# ShareGPT's speaker names (https://huggingface.co/datasets/anon8231489123/ShareGPT_Vicuna_unfiltered uses
# human/gpt/system; other exports write user/assistant or chatgpt).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
                  "assistant": "assistant", "model": "assistant", "system": "system"}
TAKEN_BY = {"chat": "the methods that generate text (LoRA and the others)",
            "labelled": "a classifier head (method Feature extraction, head_type=classifier)",
            "pairs": "an embedding head (method Feature extraction, head_type=embedding)"}
SHAPE_WORDS = {"chat": "chat rows", "labelled": "labelled text", "pairs": "paraphrase pairs"}
DEFAULT_HINT = ' (need "messages", or "prompt" and "response")'


def normal(name) -> str:
    return re.sub(r"[\s_-]+", "_", str(name).strip().lower())


def _find(columns: list[str], names: tuple) -> str | None:
    """The first of ``names`` among ``columns`` (compared in normal form), as the file writes it."""
    by_normal = {}
    for column in columns:
        by_normal.setdefault(normal(column), column)
    return next((by_normal[n] for n in names if n in by_normal), None)


def _chat_columns(columns: list[str]) -> dict | None:
    found = {}
    for part, names in (("messages", ("messages",)), ("conversations", ("conversations", "conversation"))):
        if _find(columns, names):
            found[part] = _find(columns, names)
            break
    else:
        prompt = _find(columns, _PROMPT)
        response = _find(columns, tuple(n for n in _RESPONSE if n != normal(prompt or "")))
        if not (prompt and response):
            return None
        found = {"prompt": prompt, "response": response}
        extra = _find(columns, ("input",))
        if normal(prompt) == "instruction" and extra and extra != response:
            found["input"] = extra  # Alpaca
    system = _find(columns, _SYSTEM)
    if system:
        found["system"] = system
    return found


def recognise(columns: list[str], prefer: str = "chat") -> tuple[str, dict] | None:
    """(kind, {part: column}) for columns of a known shape, trying the kind ``prefer`` first; None if unknown."""
    def labelled():
        text, label = _find(columns, ("text",)), _find(columns, ("label",))
        return {"text": text, "label": label} if text and label else None

    def pairs():
        for a, b in _PAIRS:
            if _find(columns, (a,)) and _find(columns, (b,)):
                return {"a": _find(columns, (a,)), "b": _find(columns, (b,))}
        return None

    tries = {"chat": lambda: _chat_columns(columns), "labelled": labelled, "pairs": pairs}
    for kind in [prefer, *(k for k in tries if k != prefer)]:
        found = tries[kind]()
        if found:
            return kind, found
    return None


def row_columns(keys: list[str], file_columns: dict) -> dict:
    """A JSON record's own chat columns: a JSONL file may mix messages rows and prompt/response rows. A record
    of no known shape is read through the file's columns, so its reason names the field it lacks."""
    found = _chat_columns(keys)
    if found:
        return found
    prompt, response = _find(keys, _PROMPT), _find(keys, _RESPONSE)
    if prompt or response or not file_columns:
        return {"prompt": prompt or file_columns.get("prompt", "prompt"),
                "response": response or file_columns.get("response", "response")}
    return file_columns


# --------------------------------------------------------------------------- a mapping in words


def parse_mapping(text: str | None, kind: str = "chat") -> dict:
    """``prompt=Question,response=Answer`` as {part: column}; parts are checked, columns are not (yet)."""
    mapping = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        part, sep, column = item.partition("=")
        part = normal(part)
        if not sep or part not in PARTS[kind]:
            raise ExplorerError(f"Columns: {item.strip()[:60]!r} is not PART=COLUMN; the parts of "
                                f"{SHAPE_WORDS[kind]} are {', '.join(PARTS[kind])} (e.g. prompt=Question,"
                                "response=Answer).")
        if column.strip():
            mapping[part] = column.strip()
    return mapping


def mapping_text(mapping: dict) -> str:
    return ",".join(f"{part}={column}" for part, column in mapping.items() if column)


def as_spelled(mapping: dict, columns: list[str]) -> dict:
    """The parts of ``mapping`` whose column the file has, in the file's spelling (a partial mapping too)."""
    found = {part: _find(columns, (normal(column),)) for part, column in mapping.items()}
    return {part: column for part, column in found.items() if column}


def resolve(mapping: dict, columns: list[str], kind: str, source: str) -> dict:
    """A mapping whose columns are the file's own (matched case-insensitively), complete for ``kind``."""
    resolved = {}
    for part, column in mapping.items():
        found = _find(columns, (normal(column),))
        if found is None:
            raise ExplorerError(f"{source} has no column {column!r}; its columns: {', '.join(columns)[:200]}.")
        resolved[part] = found
    if kind == "chat":
        complete = "messages" in resolved or "conversations" in resolved or {"prompt", "response"} <= set(resolved)
        need = "which column is the user's turn (prompt) and which the answer (response)"
    else:
        complete = set(PARTS[kind]) <= set(resolved)
        need = " and ".join(PARTS[kind]) + " columns"
    if not complete:
        raise ExplorerError(f"Pick the columns of {source}: {need}. Its columns: {', '.join(columns)[:200]}.")
    if kind == "chat" and len({resolved[p] for p in ("prompt", "response") if p in resolved}) == 1 and \
            "prompt" in resolved and "response" in resolved:
        raise ExplorerError(f"The user's turn and the answer are both {resolved['prompt']!r}: pick two columns.")
    return resolved


# --------------------------------------------------------------------------- rows


def check_messages(messages: object) -> list[dict]:
    """Return a clean copy of a messages list or raise ValueError with a short reason."""
    if not isinstance(messages, list):
        raise ValueError(f'"messages" must be a list, not {type(messages).__name__}')
    if not messages:
        raise ValueError('"messages" is empty')
    clean = []
    for i, msg in enumerate(messages, 1):
        if not isinstance(msg, dict):
            raise ValueError(f"message {i} must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i} has unknown role {str(role)[:30]!r} (use system, user or assistant)")
        if not isinstance(content, str):
            raise ValueError(f"message {i} content must be a string, not {type(content).__name__}")
        if not content.strip():
            raise ValueError(f"message {i} ({role}) has empty content")
        if len(content) > MAX_FIELD_CHARS:
            raise ValueError(f"message {i} content is {len(content):,} characters (limit {MAX_FIELD_CHARS:,})")
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\ud800" escape: tokenizers reject it
            raise ValueError(f"message {i} content has an invalid character at position {exc.start} "
                             "(a lone surrogate)") from None
        if role == "system" and i != 1:
            raise ValueError(f"message {i}: a system message may only come first")
        clean.append({"role": role, "content": content})
    body = [m["role"] for m in clean if m["role"] != "system"]
    if not body or body[0] != "user":
        raise ValueError("the conversation must start with a user message (after an optional system one)")
    if body[-1] != "assistant":
        raise ValueError("the last message must be from the assistant (it is what the model learns)")
    return clean


def _json_cell(value, name: str):
    """A CSV or spreadsheet cell holding JSON (a messages list), decoded with a short reason on failure."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        raise ValueError(f'missing field "{name}"')
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} cell is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{name} cell is JSON nested too deeply") from None
    except ValueError:  # Python's limit on an integer's digits
        raise ValueError(f"{name} cell is not valid JSON (a number has too many digits)") from None


def _sharegpt(turns) -> list[dict]:
    if not isinstance(turns, list):
        raise ValueError(f'"conversations" must be a list, not {type(turns).__name__}')
    messages = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i} must be an object with from and value")
        speaker = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(normal(speaker)) if isinstance(speaker, str) else None
        if role is None:
            raise ValueError(f"turn {i} is from {str(speaker)[:30]!r} (use human, gpt or system)")
        messages.append({"role": role, "content": turn.get("value", turn.get("content"))})
    return messages


def chat_row(record: dict, columns: dict, cells_are_text: bool, hint: str = "") -> dict:
    """One record as a chat row {"messages": [...]} through ``columns`` ({part: column}); ValueError with the
    reason when it cannot be one. ``hint`` follows a missing field's name."""
    if "messages" in columns or "conversations" in columns:
        part = "messages" if "messages" in columns else "conversations"
        value = record.get(columns[part])
        if value is None:
            raise ValueError(f'missing field "{columns[part]}"')
        if cells_are_text:
            value = _json_cell(value, columns[part])
        messages = value if part == "messages" else _sharegpt(value)
        system = _text(record, columns.get("system"), optional=True) if "system" in columns else None
        if system and not (isinstance(messages, list) and messages and isinstance(messages[0], dict)
                           and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return {"messages": check_messages(messages)}
    prompt = _text(record, columns["prompt"], hint=hint)
    response = _text(record, columns["response"], hint=hint)
    extra = _text(record, columns.get("input"), optional=True) if "input" in columns else None
    if extra and extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    system = _text(record, columns.get("system"), optional=True) if "system" in columns else None
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    return {"messages": check_messages(messages + [{"role": "user", "content": prompt},
                                                   {"role": "assistant", "content": response}])}


def _text(record: dict, column: str, optional: bool = False, hint: str = ""):
    value = record.get(column)
    if value is None:
        if optional:
            return None
        raise ValueError(f'missing field "{column}"{hint}')
    if not isinstance(value, str):
        raise ValueError(f'"{column}" must be a string, not {type(value).__name__}')
    return value


def flat_row(record: dict, columns: dict, check) -> dict:
    """A labelled-text or pairs record through ``columns``, checked by the format's ``check`` (its own names)."""
    return check({part: record.get(column) for part, column in columns.items()})


def wrong_kind(found: str, columns: dict, wanted: str, source: str, who: str = "") -> ExplorerError:
    """One line for a file of another kind than the method trains on, naming who takes it."""
    shown = ", ".join(columns.values())
    return ExplorerError(f"{source} holds {SHAPE_WORDS[found]} (columns {shown}), the data of {TAKEN_BY[found]}; "
                         f"{who or 'this method'} trains on {SHAPE_WORDS[wanted]}. Pick that method, or the columns "
                         "to use.")
