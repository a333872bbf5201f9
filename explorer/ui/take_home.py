"""Fine-tune's "Use it on your computer" panel: a finished chat run as a GGUF file with an Ollama Modelfile beside
it and the three commands that run it (explorer.compare.take_home), and the adapter zip with its filled model
card (explorer.train.model_card). The handlers are plain functions; tests call them without a browser.

Writing the GGUF merges the adapter into a copy of the base and quantizes every matrix: the bundled model's file
(145 MB at q8_0) took 44 s on the project's 2-core machine while others worked on it (`python -m explorer gguf
--model smollm2-135m-instruct`, wall time). It runs on a thread of its own while the handler streams how long it has been going, and the
panel's builds queue one at a time (two at once would only share the same cores).
"""

from __future__ import annotations

import threading
import time

import gradio as gr

from ..compare import take_home
from ..errors import ExplorerError
from ..train import model_card, runs
from .common import shows_errors

POLL_SECONDS = 1.0
NOT_YET = "Pick a finished run in the runs table (or train one): its files for your computer appear here."


def chosen_run(run_id: str) -> runs.Run:
    """The run the panel acts on: finished, its adapter saved; a clear message otherwise."""
    if not (run_id or "").strip():
        raise ExplorerError(NOT_YET)
    run = runs.open_run(run_id.strip(), need_adapter=False)
    if not run.finished:
        raise ExplorerError(f"Run {run.run_id} is still {run.state}: its files can be built once it has finished.")
    if not run.has_adapter:
        raise ExplorerError(f"Run {run.run_id} ended ({run.state}) before its first step was saved: it has nothing "
                            "to take home.")
    return run


def commands_markdown(result: take_home.TakeHome) -> str:
    """What to do with the two files, in order: the note on SYSTEM, then the commands as one shell block."""
    where = ("Put both files in one folder (your Downloads folder works), open a terminal there, and run:"
             if result.modelfile else "Open a terminal in the folder that holds the file, and run:")
    size = result.gguf.stat().st_size / 1e6
    return (f"**Ready:** `{result.gguf.name}` ({size:,.0f} MB)"
            f"{f' and `{result.modelfile.name}`' if result.modelfile else ''}. {result.note}\n\n{where}\n\n"
            f"```sh\n{take_home.commands_text(result)}\n```\n\nOllama: <https://ollama.com/download>; llama.cpp's "
            "`llama-cli`: <https://github.com/ggml-org/llama.cpp> (its releases have ready-built programs).")


@shows_errors(outputs=3, at=2, blank={0: None, 1: ""})
def build_files(run_id: str, qtype: str = take_home.DEFAULT_TYPE):
    """Streams (files, commands, progress): the GGUF and the Modelfile for download once written."""
    run = chosen_run(run_id)
    qtype = qtype or take_home.DEFAULT_TYPE
    if run.method is not None and not run.method.mergeable:
        raise ExplorerError(f"Run {run.run_id} used {run.method.title}, which cannot merge: "
                            f"{run.method.merge_reason} A GGUF file holds plain weights only; the adapter zip "
                            "below runs it with PEFT.")
    outcome: dict = {}

    def work():
        try:
            # In the run's folder: deleted with the run, and counted in the runs' disk budget on a server.
            outcome["result"] = take_home.for_run(run.run_id, qtype, run.folder / f"merged-{run.run_id}-{qtype}.gguf")
        except BaseException as error:  # noqa: BLE001 - handed to the request thread, which shows it
            outcome["error"] = error

    worker = threading.Thread(target=work, name=f"take-home-{run.run_id}", daemon=True)
    started = time.monotonic()
    worker.start()
    while worker.is_alive():
        seconds = time.monotonic() - started
        yield (gr.skip(), gr.skip(), f"Merging the adapter into {run.config.model} and writing the GGUF file "
               f"({qtype}) … {seconds:.0f} s so far (the bundled model's took 44 s on a 2-core machine).")
        worker.join(POLL_SECONDS)
    if "error" in outcome:
        raise outcome["error"]
    result: take_home.TakeHome = outcome["result"]
    files = [str(result.gguf)] + ([str(result.modelfile)] if result.modelfile else [])
    yield files, commands_markdown(result), f"Done in {time.monotonic() - started:.0f} s."


@shows_errors(outputs=2, at=1, blank={0: None})
def adapter_with_card(run_id: str):
    """(the adapter zip, its model card as markdown)."""
    run = chosen_run(run_id)
    archive = model_card.zip_with_card(run.run_id)
    card = (run.folder / runs.ADAPTER_DIR / "README.md").read_text(encoding="utf-8")
    body = card.split("---", 2)[2] if card.startswith("---") else card  # the page shows the card, not its YAML
    return str(archive), body.strip()


def describe(run_id: str) -> str:
    """One line on what the panel offers for this run (or why not yet)."""
    if not (run_id or "").strip():
        return NOT_YET
    try:
        run = runs.open_run(run_id.strip(), need_adapter=False)
    except ExplorerError as error:
        return str(error)
    if not run.finished:  # the panel is not told when it finishes: a line that stays true then
        return f"**{run.run_id}** is {run.state}: once it has finished, the buttons below build its files."
    merge = ("Its adapter merges into the base: one GGUF file for llama.cpp and Ollama."
             if run.method.mergeable else f"{run.method.title} cannot merge, so no GGUF file: use the adapter zip.")
    if run.state == "diverged":
        merge += " It diverged (its loss blew up), so its replies are likely noise: the files hold it as it ended."
    return f"**{run.run_id}** ({run.method.title} on {run.config.model}, {run.dataset_label}). {merge}"


def create_take_home(run_id_state) -> dict:
    """The panel, acting on the run in ``run_id_state`` (the Fine-tune tab's selected run)."""
    with gr.Accordion("Use it on your computer", open=False, elem_id="take-home"):
        gr.Markdown("Take the fine-tuned model home: one GGUF file (for llama.cpp, Ollama and LM Studio) "
                    "with an Ollama Modelfile that holds its chat template and system prompt, and the three "
                    "commands that run it; or the adapter alone, with a model card, for Python and PEFT.")
        about = gr.Markdown(NOT_YET, elem_id="take-home-run")
        with gr.Row():
            gguf_button = gr.Button("Build the GGUF file and Modelfile", variant="primary", elem_id="take-home-gguf")
            qtype = gr.Radio(["q8_0", "f16"], value=take_home.DEFAULT_TYPE, label="Precision",
                             info="q8_0: 8.5 bits per weight (8-bit values, one 16-bit scale per 32), about half of f16's size",
                             elem_id="take-home-type")
        progress = gr.Markdown(elem_id="take-home-progress")
        files = gr.File(label="GGUF file and Modelfile", file_count="multiple", interactive=False,
                        elem_id="take-home-files")
        commands = gr.Markdown(elem_id="take-home-commands")
        adapter_button = gr.Button("Download the adapter with its model card", elem_id="take-home-adapter")
        adapter = gr.File(label="Adapter (.zip)", interactive=False, elem_id="take-home-zip")
        with gr.Accordion("Model card (README.md in the zip)", open=False):
            card = gr.Markdown(elem_id="take-home-card")
    run_id_state.change(describe, run_id_state, about, api_visibility="private", show_progress="hidden")
    gguf_button.click(build_files, [run_id_state, qtype], [files, commands, progress], api_visibility="private",
                      concurrency_limit=1, concurrency_id="take-home-gguf")
    adapter_button.click(adapter_with_card, run_id_state, [adapter, card], api_visibility="private")
    return {"about": about, "files": files, "commands": commands, "progress": progress, "adapter": adapter,
            "card": card, "gguf_button": gguf_button, "adapter_button": adapter_button, "type": qtype}

