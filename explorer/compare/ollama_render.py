"""What Ollama does with a Modelfile, without Ollama: read it as its parser does, and render a chat through its
TEMPLATE as its chat handler does. explorer.compare.modelfile checks every Modelfile it writes with these, and
the tests compare the result with the tokenizer's own chat template.

- ``parse``: a port of Ollama's Modelfile parser (parser/parser.go, ParseFile and parseRuneForState, read at
  github.com/ollama/ollama): commands end at a line break; a value ends at the first space or line break after
  which it unquotes ("..." or \"\"\"...\"\"\"); characters Go's strconv.IsPrint refuses are dropped, except the
  spaces and line breaks inside a quoted value.
- ``ollama_prompt``: the chat handler (server/routes.go, ChatHandler) puts SYSTEM first when the conversation
  does not start with a system message, then executes the template over ``.Messages``.
- ``render_go``: the part of Go's text/template the generated TEMPLATE uses: ``range .Messages``,
  ``if``/``else if eq .Role "..."``, ``else``, ``end``, ``.Role``, ``.Content``, and ``{{-``/``-}}`` trimming.
"""

from __future__ import annotations

import re

from ..errors import ExplorerError

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) in order, with Go's trim markers applied to the neighbouring text."""
    out, at = [], 0
    for match in _ACTION.finditer(template):
        text = template[at:match.start()]
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(("text", text))
        out.append(("action", match.group(2)))
        at = match.end()
        if match.group(3):
            rest = template[at:]
            at += len(rest) - len(rest.lstrip(" \t\r\n"))
    out.append(("text", template[at:]))
    return [token for token in out if token != ("text", "")]


def render_go(template: str, messages: list[dict]) -> str:
    """The template executed over ``.Messages`` (Role, Content) as Go's text/template would, for the actions
    go_template writes: range .Messages, if/else if eq .Role "x", else, end, .Role, .Content."""
    tokens = _tokens(template)
    output: list[str] = []

    def run(i: int, message: dict | None, emit: bool) -> int:
        """Execute from token i until an unmatched end/else; the index of that token."""
        while i < len(tokens):
            kind, value = tokens[i]
            if kind == "text":
                if emit:
                    output.append(value)
                i += 1
            elif value in (".Role", ".Content"):
                if emit and message is None:
                    raise ExplorerError(f"{value} outside range .Messages")
                if emit:
                    output.append(message[value[1:].lower()])
                i += 1
            elif value == "range .Messages":
                body = i + 1
                end = run(body, None, False)
                for each in (messages if emit else []):
                    run(body, each, True)
                i = end + 1
            elif value.startswith("if "):
                i = _run_if(i, message, emit)
            elif value == "end" or value == "else" or value.startswith("else if "):
                return i
            else:
                raise ExplorerError(f"render_go does not implement {{{{ {value} }}}}")
        return i

    def condition(value: str, message: dict | None) -> bool:
        match = re.fullmatch(r'eq \.Role "([^"]*)"', value)
        if match is None or message is None:
            raise ExplorerError(f"render_go does not implement the condition {value!r}")
        return message["role"] == match.group(1)

    def _run_if(i: int, message: dict | None, emit: bool) -> int:
        taken = False
        value = tokens[i][1][len("if "):]
        while True:
            chosen = emit and not taken and (value is None or condition(value, message))
            stop = run(i + 1, message, chosen)
            taken = taken or chosen
            branch = tokens[stop][1] if stop < len(tokens) else "end"
            if branch == "end":
                return stop + 1
            value = None if branch == "else" else branch[len("else if "):]
            i = stop

    end = run(0, None, True)
    if end != len(tokens):
        raise ExplorerError(f"unexpected {{{{ {tokens[end][1]} }}}} in the template")
    return "".join(output)


def ollama_prompt(template: str, system: str | None, messages: list[dict]) -> str:
    """What Ollama renders for a chat: SYSTEM first when the conversation has no system message, then the
    template over the messages (server/routes.go, ChatHandler)."""
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]
    return render_go(template, messages)


# --- Ollama's Modelfile parser ------------------------------------------------------------------------------

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
NIL, NAME, VALUE, PARAMETER, MESSAGE, COMMENT = range(6)


def _is_space(r: str) -> bool:
    return r in " \t"


def _is_newline(r: str) -> bool:
    return r in "\r\n"


def _unquote(s: str) -> tuple[str, bool]:
    if s[:3] == '"""':
        return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
    if s[:1] == '"':
        return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
    return s, True


def _next_state(r: str, state: int) -> tuple[int, str]:
    """parseRuneForState: the next state and the rune to keep ("" for none)."""
    if state == NIL:
        if r == "#":
            return COMMENT, ""
        return (NIL, "") if _is_space(r) or _is_newline(r) else (NAME, r)
    if state == NAME:
        if r.isascii() and r.isalpha():
            return NAME, r
        if _is_space(r):
            return VALUE, ""
        raise ExplorerError("command must be one of " + ", ".join(COMMANDS))
    if state == VALUE:
        return (NIL, r) if _is_newline(r) or _is_space(r) else (VALUE, r)
    if state in (PARAMETER, MESSAGE):
        if (r.isascii() and r.isalpha()) or (state == PARAMETER and (r.isdigit() and r.isascii() or r == "_")):
            return state, r
        if _is_space(r):
            return VALUE, ""
        raise ExplorerError("unexpected end of a PARAMETER or MESSAGE line")
    return (NIL, "") if _is_newline(r) else (COMMENT, "")  # COMMENT


def _go_printable(r: str) -> bool:
    """strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space (Python's isprintable
    refuses the same categories)."""
    return r.isprintable()


def parse(text: str) -> list[tuple[str, str]]:
    """The Modelfile's commands as Ollama's ParseFile reads them: (name, args), FROM as "model", each PARAMETER
    by its own name (e.g. ("stop", "<|im_end|>"))."""
    commands: list[tuple[str, str]] = []
    name, state, buffer, role = "", NIL, "", ""
    for r in text:
        following, kept = _next_state(r, state)
        if following != state:
            if state == NAME:
                word = buffer.lower()
                if word not in COMMANDS:
                    raise ExplorerError("command must be one of " + ", ".join(COMMANDS))
                name = "model" if word == "from" else word
                following = {"parameter": PARAMETER, "message": MESSAGE}.get(word, following)
            elif state == PARAMETER:
                name = buffer
            elif state == MESSAGE:
                role = buffer
            elif state == VALUE:
                value, done = _unquote(buffer.strip())
                if not done or _is_space(r):
                    buffer += r
                    continue
                commands.append((name, f"{role}: {value}" if role else value))
                role = ""
            buffer, state = "", following
        if kept and _go_printable(kept):
            buffer += kept
    if state == VALUE:
        value, done = _unquote(buffer.strip())
        if not done:
            raise ExplorerError("unexpected end of the Modelfile inside a quoted value")
        commands.append((name, f"{role}: {value}" if role else value))
    elif state not in (NIL, COMMENT):
        raise ExplorerError("unexpected end of the Modelfile")
    if not any(command == "model" for command, _ in commands):
        raise ExplorerError("no FROM line")
    return commands


def read_modelfile(text: str) -> dict:
    """FROM, TEMPLATE, SYSTEM (the last of each, as Ollama keeps) and the stop parameters, as Ollama reads them."""
    found: dict = {"stop": []}
    for name, value in parse(text):
        if name == "stop":
            found["stop"].append(value)
        elif name in ("model", "template", "system"):
            found["from" if name == "model" else name] = value
    return found
