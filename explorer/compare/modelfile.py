"""An Ollama Modelfile beside a GGUF file: its chat template, stop tokens and system prompt, and the commands
that run it (Ollama and llama.cpp).

The TEMPLATE is derived from the tokenizer's own chat template (the Jinja template transformers applies, the one
training rendered conversations with), not picked from a list of known formats: conversations of sentinel
strings are rendered with ``apply_chat_template`` and cut at the sentinels, which gives each role's text before
and after its content, the text that opens the assistant's reply, and the system prompt the template inserts
when a conversation has none (SmolLM2's "You are a helpful AI assistant named SmolLM, ..."). The result is
written as a Go template over ``.Messages`` (Ollama's template language), then checked: a few conversations
(with and without a system message, several turns, contents with edge whitespace) must render through it
exactly as through the Jinja template. A template that cannot be written this way (one that rewrites contents,
changes with the turn, or inserts text a Modelfile cannot hold) is refused with one line saying why; the GGUF
file still carries the Jinja template itself, which llama.cpp applies (``--jinja``).

How Ollama renders a chat (server/routes.go, ChatHandler): when the conversation does not start with a system
message and the Modelfile has a SYSTEM, that SYSTEM is put first as a system message; then the template runs
over the messages. So SYSTEM holds the run's system prompt if its training rows shared one, else the template's
default (what the model saw in training either way). explorer.compare.ollama_render reads a Modelfile and renders
a chat as Ollama does, without Ollama, for the check above and the tests.

The GGUF says whether the runner puts the BOS token first (``tokenizer.ggml.add_bos_token``, written by gguf.py
from ``adds_bos``: whether the tokenizer's own encode does). Where it does and the template opens with the BOS
text (Llama 3), TEMPLATE leaves that text out, as Ollama's own Llama 3 template does; the check compares the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExplorerError
from .ollama_render import ollama_prompt, read_modelfile

ROLES = ("system", "user", "assistant")
SENTINEL = {"system": "SYSXQ7", "user": "USRXQ7", "assistant": "ASTXQ7", "user again": "AGAINXQ7"}
CHECKS = (  # conversations every TEMPLATE must render exactly as the Jinja template does
    [{"role": "user", "content": "What time do you open on Saturdays?"}],
    [{"role": "system", "content": "You answer for Rosie's Bakery."},
     {"role": "user", "content": " Hi there!\n"}, {"role": "assistant", "content": "We open at 7am. "},
     {"role": "user", "content": "And close?"}],
    [{"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "Four."},
     {"role": "user", "content": "Three plus three?"}, {"role": "assistant", "content": "Six."},
     {"role": "user", "content": "Thanks"}],
)


@dataclass
class ChatFormat:
    """A chat template as pieces: what each role's content sits between, and what opens the reply."""

    preamble: str                 # once before the first message (without the BOS token the runner adds)
    prefixes: dict[str, str]      # role -> text before its content
    suffixes: dict[str, str]      # role -> text after its content
    generation: str               # opens the assistant's reply (add_generation_prompt)
    default_system: str | None    # inserted by the template when a conversation has no system message
    stops: list[str]              # strings that end the assistant's turn
    bos_left_out: str             # the BOS text the template starts with, left to the runner ("" if none)


class CannotExpress(ExplorerError):
    """The tokenizer's chat template cannot be written as an Ollama template (the message says why)."""


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except Exception as error:  # noqa: BLE001 - jinja raises its own errors (e.g. a role it refuses)
        raise CannotExpress(f"The model's chat template refused a conversation ({error}), so no Ollama template "
                            "can be derived from it.") from None


def _between(text: str, parts: list[str]) -> list[str]:
    """The text before, between and after the sentinels ``parts`` (each exactly once, in order)."""
    pieces, rest = [], text
    for part in parts:
        if rest.count(part) != 1:
            raise CannotExpress("The model's chat template does not render each message's content once, as "
                                "written, so it cannot be written as an Ollama template.")
        before, rest = rest.split(part)
        pieces.append(before)
    return [*pieces, rest]


def chat_format(tokenizer) -> ChatFormat:
    """The tokenizer's chat template cut into a ChatFormat, checked against CHECKS."""
    if not getattr(tokenizer, "chat_template", None):
        raise CannotExpress("This model has no chat template, so there is no chat format to give Ollama; the "
                            "GGUF runs as a plain text model (llama-cli -m FILE -p TEXT).")
    s, u, a = SENTINEL["system"], SENTINEL["user"], SENTINEL["assistant"]
    turns = [{"role": "system", "content": s}, {"role": "user", "content": u},
             {"role": "assistant", "content": a}, {"role": "user", "content": SENTINEL["user again"]}]
    full = _render(tokenizer, turns, False)
    with_reply = _render(tokenizer, turns, True)
    if not with_reply.startswith(full):
        raise CannotExpress("The model's chat template changes the conversation when asked for a reply, so it "
                            "cannot be written as an Ollama template.")
    generation = with_reply[len(full):]
    opening, system_to_user, user_to_assistant, assistant_to_user, after_last = _between(
        full, [s, u, a, SENTINEL["user again"]])
    user_suffix = after_last
    assistant_suffix = _between(_render(tokenizer, turns[:3], False), [s, u, a])[-1]
    if not (user_to_assistant.startswith(user_suffix) and assistant_to_user.startswith(assistant_suffix)):
        raise CannotExpress("The model's chat template ends a turn differently when it is the last one, so it "
                            "cannot be written as an Ollama template.")
    assistant_prefix = user_to_assistant[len(user_suffix):]
    user_prefix = assistant_to_user[len(assistant_suffix):]
    if not system_to_user.endswith(user_prefix):
        raise CannotExpress("The model's chat template opens a user turn differently after a system message, so "
                            "it cannot be written as an Ollama template.")
    system_suffix = system_to_user[:len(system_to_user) - len(user_prefix)]
    # Where the preamble ends and the system turn begins: at the user turn's opening with the role renamed
    # (ChatML's "<|im_start|>system\n", Llama 3's header), else the preamble is the BOS text or nothing.
    named = user_prefix.replace("user", "system") if user_prefix.count("user") == 1 else None
    bos = getattr(tokenizer, "bos_token", None) or ""
    if named and named in opening:
        at = opening.index(named)
    else:
        at = len(bos) if bos and opening.startswith(bos) else 0
    preamble, system_prefix = opening[:at], opening[at:]
    default = _default_system(tokenizer, preamble, system_prefix, system_suffix, user_prefix, user_suffix)
    bos_left_out = bos if bos and preamble.startswith(bos) and adds_bos(tokenizer) else ""
    specials = _special_strings(tokenizer)
    stops = [t for t in specials if t in assistant_suffix]
    if not stops and assistant_suffix.strip():  # a turn closed by plain text (or tokens not marked special)
        stops.append(assistant_suffix.strip())
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    found = ChatFormat(preamble[len(bos_left_out):], {"system": system_prefix, "user": user_prefix,
                                                      "assistant": assistant_prefix},
                       {"system": system_suffix, "user": user_suffix, "assistant": assistant_suffix},
                       generation, default, stops, bos_left_out)
    check(tokenizer, found)
    return found


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's encode puts its BOS token first (Llama 3's does, SmolLM2's does not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def _default_system(tokenizer, preamble, system_prefix, system_suffix, user_prefix, user_suffix) -> str | None:
    u = SENTINEL["user"]
    head = _between(_render(tokenizer, [{"role": "user", "content": u}], False), [u])[0]
    if head == preamble + user_prefix:
        return None
    start, end = preamble + system_prefix, system_suffix + user_prefix
    if head.startswith(start) and head.endswith(end) and len(head) >= len(start) + len(end):
        inserted = head[len(start):len(head) - len(end)]
        if inserted:
            return inserted
    raise CannotExpress("The model's chat template adds text of its own to a conversation without a system "
                        "message that an Ollama SYSTEM line cannot hold, so it cannot be written as an Ollama "
                        "template.")


def _special_strings(tokenizer) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return sorted({str(t.content) for t in decoder.values() if t.special}, key=len, reverse=True)


def go_template(fmt: ChatFormat) -> str:
    """The ChatFormat as an Ollama TEMPLATE (Go text/template over .Messages)."""
    pieces = [*fmt.prefixes.values(), *fmt.suffixes.values(), fmt.generation, fmt.preamble]
    if any("{{" in piece or "}}" in piece or '"""' in piece for piece in pieces):
        raise CannotExpress('The model\'s chat template writes "{{", "}}" or \'"""\' around messages, which a '
                            "Modelfile's TEMPLATE cannot hold as text.")

    def generic(table: dict[str, str]) -> str | None:  # one text for every role, the role's name in it
        shapes = {table[role].replace(role, "\x00", 1) if table[role].count(role) == 1 else None for role in ROLES}
        shape = shapes.pop() if len(shapes) == 1 else None
        return None if shape is None else shape.replace("\x00", "{{ .Role }}")

    prefix, suffix = generic(fmt.prefixes), None
    if len(set(fmt.suffixes.values())) == 1:
        suffix = fmt.suffixes["user"]
    if prefix is not None and suffix is not None:
        body = prefix + "{{ .Content }}" + suffix
    else:
        branches = [f'{"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{fmt.prefixes[role]}{{{{ .Content }}}}'
                    f"{fmt.suffixes[role]}" for i, role in enumerate(ROLES)]
        body = "{{ " + "{{ ".join(branches) + "{{ end }}"
    return f"{fmt.preamble}{{{{ range .Messages }}}}{body}{{{{ end }}}}{fmt.generation}"


def check(tokenizer, fmt: ChatFormat) -> None:
    """Every CHECKS conversation renders through the TEMPLATE (with the default system as SYSTEM) exactly as
    through the tokenizer's chat template."""
    template = go_template(fmt)
    for messages in CHECKS:
        want = _render(tokenizer, messages, True)
        if not want.startswith(fmt.bos_left_out) or \
                ollama_prompt(template, fmt.default_system, messages) != want[len(fmt.bos_left_out):]:
            raise CannotExpress("The model's chat template renders a conversation differently from any Ollama "
                                "template built from its pieces (it rewrites contents or changes with the turn), "
                                "so no Modelfile TEMPLATE is written.")


# --- the Modelfile and the commands ----------------------------------------------------------------------------

def _quoted(text: str, what: str) -> str:
    """The text between triple quotes. Ollama's parser (parser/parser.go) ends the value at the first three
    double quotes before a space or line end, and drops every character Go's strconv.IsPrint refuses except tabs and line
    breaks (the same set Python's str.isprintable refuses: controls, format characters such as a zero-width
    space, and spaces other than ' ', e.g. a spreadsheet's no-break space)."""
    if '"""' in text:
        raise CannotExpress(f'The {what} holds """, which an Ollama Modelfile cannot quote; remove it from the '
                            "training rows' system message to get a Modelfile.")
    dropped = sorted({c for c in text if not (c.isprintable() or c in "\t\r\n")})
    if dropped:
        raise CannotExpress(f"The {what} holds characters Ollama's Modelfile parser drops "
                            f"({', '.join(f'U+{ord(c):04X}' for c in dropped)}), so Ollama would not see it as "
                            "the model was trained; replace them in the training rows to get a Modelfile.")
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, fmt: ChatFormat, system: str | None) -> str:
    """The Modelfile: FROM the GGUF beside it, TEMPLATE, one stop PARAMETER per stop string, SYSTEM."""
    lines = [f"# Written by PEFT Explorer. Run: ollama create NAME -f {gguf_name.rsplit('.', 1)[0]}.Modelfile",
             f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(go_template(fmt), 'chat template')}"]
    lines += [f'PARAMETER stop "{stop}"' for stop in fmt.stops if '"' not in stop and "\n" not in stop]
    system = system if system is not None else fmt.default_system
    if system:
        lines.append(f"SYSTEM {_quoted(system, 'system prompt')}")
    text = "\n".join(lines) + "\n"
    read = read_modelfile(text)  # as Ollama's own parser reads it
    if (read.get("template"), read.get("system"), read["from"]) != (go_template(fmt), system or None, f"./{gguf_name}"):
        raise CannotExpress("Ollama's Modelfile parser would read this Modelfile differently from what was "
                            "written (a file name or text it cannot quote), so none is written.")
    return text


def ollama_name(stem: str) -> str:
    """A model name Ollama accepts: lower case letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "explorer-model"


def commands(gguf_path: Path, modelfile_path: Path | None, system: str | None) -> list[str]:
    """The three commands that run the file: create and run it in Ollama, or chat with it in llama.cpp."""
    name = ollama_name(gguf_path.stem)
    llama = f'llama-cli -m {gguf_path.name} -cnv --jinja'
    if system:
        llama += " -sys " + _shell_quote(system)
    if modelfile_path is None:
        return [llama]
    return [f"ollama create {name} -f {modelfile_path.name}", f"ollama run {name}", llama]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def write_beside(gguf_path: Path, tokenizer, system: str | None) -> Path:
    """``<name>.Modelfile`` beside the GGUF file (written whole under a temporary name, then renamed)."""
    target = gguf_path.with_suffix(".Modelfile")
    text = modelfile_text(gguf_path.name, chat_format(tokenizer), system)
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise ExplorerError(f"Could not write {target} ({error.strerror or error}).") from None
    return target


def run_system_prompt(rows: list[dict]) -> str | None:
    """The system message every training row opens with, if they all share one (the run's system prompt)."""
    found = {row["messages"][0]["content"] if row.get("messages") and row["messages"][0]["role"] == "system"
             else None for row in rows}
    return found.pop() if len(found) == 1 else None
