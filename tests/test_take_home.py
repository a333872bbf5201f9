"""Fine-tune's "Use it on your computer" panel through its handlers (no browser): a finished tiny-model run gives
a GGUF file and a Modelfile to download with the three commands; the adapter zip carries its model card; runs
that cannot give a GGUF file are told why in one line."""

import shutil

import pytest

from explorer.compare import ollama_render
from explorer.train import runs
from explorer.ui import take_home

from conftest import copy_run, force_status, train_run


@pytest.fixture(scope="module")
def finished_run(cache):
    return train_run("lora", options={"r": 4}, steps=2, learning_rate=0.01)


def test_the_gguf_and_modelfile_are_offered_with_the_three_commands(finished_run):
    updates = list(take_home.build_files(finished_run, "q8_0"))
    files, commands, progress = updates[-1]
    assert progress.startswith("Done in ")
    assert all(isinstance(update[2], str) for update in updates)
    gguf_path, modelfile_path = files
    assert gguf_path == str(runs.run_path(finished_run) / f"merged-{finished_run}-q8_0.gguf")  # goes with the run
    assert modelfile_path == gguf_path[:-len(".gguf")] + ".Modelfile"
    name = f"merged-{finished_run}-q8_0"
    for command in (f"ollama create {name} -f {name}.Modelfile", f"ollama run {name}",
                    f"llama-cli -m {name}.gguf -cnv --jinja"):
        assert command in commands
    written = ollama_render.read_modelfile(open(modelfile_path).read())
    assert written["from"] == f"./{name}.gguf" and written["stop"] == ["<|im_end|>"]


def test_the_adapter_zip_comes_with_its_card(finished_run):
    archive, card = take_home.adapter_with_card(finished_run)
    assert archive.endswith(f"{finished_run}-adapter.zip")
    assert card.startswith("# LoRA adapter of tiny-random-llama trained on pirate")
    assert "from peft import PeftModel" in card and "[More Information Needed]" not in card


def test_runs_that_give_no_gguf_are_told_why_in_one_line(finished_run):
    files, commands, progress = list(take_home.build_files("", "q8_0"))[-1]
    assert (files, commands) == (None, "") and take_home.NOT_YET in progress
    prompt_run = copy_run(finished_run, edit_config={"method": "prompt"}, options={})
    files, commands, progress = list(take_home.build_files(prompt_run, "q8_0"))[-1]
    assert progress.startswith("**Error:**") and "cannot merge" in progress and "adapter zip" in progress
    assert "Prompt" in take_home.describe(prompt_run) and "no GGUF file" in take_home.describe(prompt_run)
    assert take_home.describe("") == take_home.NOT_YET
    running = copy_run(finished_run)
    force_status(runs.run_path(running), "running")
    assert "is running: once it has finished" in take_home.describe(running)
    assert "still running" in list(take_home.build_files(running))[-1][2]
    stopped_early = copy_run(finished_run)
    force_status(runs.run_path(stopped_early), "stopped")
    shutil.rmtree(runs.run_path(stopped_early) / runs.ADAPTER_DIR)
    assert "nothing to take home" in take_home.adapter_with_card(stopped_early)[1]


@pytest.fixture(scope="module")
def panel_url(finished_run):
    """The panel alone on a page, its run already chosen (the lead places it in Fine-tune)."""
    import gradio as gr

    from conftest import free_port

    with gr.Blocks() as demo:
        take_home.create_take_home(gr.State(finished_run))
    _, url, _ = demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                    quiet=True, share=False)
    yield url.replace("localhost", "127.0.0.1")
    demo.close()


def test_in_the_browser_both_files_download_and_the_commands_and_card_show(panel_url, page, finished_run, tmp_path,
                                                                          screenshot):
    from conftest import wait_for_text

    name = f"merged-{finished_run}-q8_0"
    page.goto(panel_url)
    page.get_by_text("Use it on your computer").click()
    page.locator("#take-home-gguf").click()
    wait_for_text(page, "#take-home-commands", f"ollama create {name} -f {name}.Modelfile", timeout=300_000)
    wait_for_text(page, "#take-home-progress", "Done in")
    listed = page.locator("#take-home-files").inner_text().replace("\n", "")  # stem and extension on two lines
    assert f"{name}.gguf" in listed and f"{name}.Modelfile" in listed
    with page.expect_download() as download:
        page.locator("#take-home-files tr", has_text=".Modelfile").locator("a").click()
    saved = tmp_path / "downloaded.Modelfile"
    download.value.save_as(saved)
    assert saved.read_text() == (runs.run_path(finished_run) / f"{name}.Modelfile").read_text()
    page.locator("#take-home-adapter").click()
    wait_for_text(page, "#take-home-zip", f"{finished_run}-adapter")
    assert f"{finished_run}-adapter.zip" in page.locator("#take-home-zip").inner_text().replace("\n", "")
    page.get_by_text("Model card (README.md in the zip)").click()
    wait_for_text(page, "#take-home-card", "from peft import PeftModel")
    screenshot("take_home_panel")
