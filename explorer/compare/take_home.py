"""Use it on your computer: a run's merged model as one GGUF file, an Ollama Modelfile beside it, and the three
commands that run it (explorer.compare.gguf writes the file, explorer.compare.modelfile the Modelfile).

The Modelfile's SYSTEM is the run's system prompt (the system message every training row opened with), else
the chat template's own default: what the model saw in training either way. A chat template that cannot be
written as an Ollama template leaves the GGUF file alone and says why in ``note``; llama.cpp still runs it with
the template the file carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ExplorerError
from . import gguf, modelfile

DEFAULT_TYPE = "q8_0"  # a quarter of f32 and half of f16, its replies close to the merged model's (tests/test_gguf.py)


@dataclass
class TakeHome:
    gguf: Path
    modelfile: Path | None
    commands: list[str]
    system: str | None      # the SYSTEM line's text (None: no Modelfile, or the template has no default)
    note: str               # where SYSTEM came from, or why there is no Modelfile

    def as_json(self) -> dict:
        return {"path": str(self.gguf), "bytes": self.gguf.stat().st_size,
                "modelfile": str(self.modelfile) if self.modelfile else None, "commands": self.commands,
                "system": self.system, "note": self.note}


def run_system(run) -> tuple[str | None, str]:
    """(the run's system prompt or None, a sentence saying where it comes from)."""
    from ..data import sources

    try:
        train_rows, _ = sources.load_dataset(run.config.dataset)
    except ExplorerError as error:
        return None, f"The run's data could not be read to find its system prompt ({error})."
    system = modelfile.run_system_prompt(train_rows)
    if system is not None:
        return system, "SYSTEM holds the system prompt every training row opened with."
    with_system = sum(1 for row in train_rows if row["messages"][0]["role"] == "system")
    if with_system:
        return None, (f"{with_system} of {len(train_rows)} training rows opened with a system message, not all the "
                      "same one: SYSTEM holds the chat template's default instead.")
    return None, "The training rows had no system message: SYSTEM holds the chat template's default, as in training."


def beside(gguf_path: Path, tokenizer, system: str | None, system_note: str) -> TakeHome:
    """The Modelfile written beside an existing GGUF file, with the commands (or, where the chat template cannot
    be expressed, the llama.cpp command alone and the reason)."""
    try:
        fmt = modelfile.chat_format(tokenizer)
        path = modelfile.write_beside(gguf_path, tokenizer, system)
    except modelfile.CannotExpress as error:
        stale = gguf_path.with_suffix(".Modelfile")
        stale.unlink(missing_ok=True)  # never leave an older Modelfile beside a new file
        return TakeHome(gguf_path, None, modelfile.commands(gguf_path, None, system), None,
                        f"No Modelfile: {error}")
    shown = system if system is not None else fmt.default_system
    return TakeHome(gguf_path, path, modelfile.commands(gguf_path, path, system), shown,
                    system_note if shown else "The chat template has no default system prompt: no SYSTEM line.")


def _check_target(path: Path | None) -> None:
    if path is not None and path.suffix.lower() != ".gguf":
        raise ExplorerError(f"The GGUF file's name must end in .gguf (the Modelfile goes beside it); got {path.name}.")


def for_run(run_id: str, qtype: str = DEFAULT_TYPE, path: Path | None = None) -> TakeHome:
    """A run's merged model as GGUF, and its Modelfile beside it."""
    from . import variants

    _check_target(path)
    written = gguf.export_run(run_id, qtype, path)
    session = variants.session(run_id)
    system, note = run_system(session.run)
    return beside(written, session.tokenizer, system, note)


def for_model(name: str, qtype: str = DEFAULT_TYPE, path: Path | None = None) -> TakeHome:
    """A runnable model as it is (e.g. the bundled SmolLM2) as GGUF, and its Modelfile beside it."""
    from ..models import loading, registry

    _check_target(path)
    entry = registry.resolve(name)
    loaded = loading.load_fresh(entry.name if entry.kind != "hub" else name, precision="fp32")
    written = gguf.write(loaded.model, loaded.tokenizer, path or gguf.default_path(entry.name.replace("/", "--"), qtype),
                         qtype, entry.name)
    return beside(written, loaded.tokenizer, None, "SYSTEM holds the chat template's default system prompt.")


def commands_text(result: TakeHome) -> str:
    """The commands as a shell block with one comment line each, for the page and the CLI."""
    explain = (["# make it an Ollama model (once)", "# chat with it in Ollama", "# or chat with it in llama.cpp"]
               if result.modelfile else ["# chat with it in llama.cpp"])
    return "\n".join(f"{command}  {comment}" for command, comment in zip(result.commands, explain))
