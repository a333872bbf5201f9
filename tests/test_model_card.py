"""The adapter's model card: the download zip's README is filled from the run (no "[More Information Needed]"),
its three lines of Python really load the adapter with PEFT, and the bundled model is named by its hub id."""

import json
import os
import re
import zipfile

import pytest
import torch

from explorer.train import model_card, runs

from conftest import BUNDLED, TINY, copy_run, train_run


@pytest.fixture(scope="module")
def lora_run(cache):
    return train_run("lora", options={"r": 4}, steps=2, learning_rate=0.01)


def test_the_zip_holds_a_filled_card_whose_python_loads_the_adapter(lora_run, tmp_path, monkeypatch):
    archive = model_card.zip_with_card(lora_run)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(tmp_path)
    card = (tmp_path / "adapter" / "README.md").read_text()
    summary = runs.read_run(runs.run_path(lora_run)).summary
    assert "[More Information Needed]" not in card
    assert "base_model:" not in card.split("---")[1]  # a local folder is no hub id
    assert "is a local folder" in card
    assert "**pirate**" in card and "training rows" in card and "LoRA; options: r=4" in card
    assert f"| Training loss | {summary['train_loss_first']:.3f} | {summary['train_loss_last']:.3f} |" in card
    assert "Steps:** 2 of 2" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    monkeypatch.chdir(tmp_path)  # where the user unzipped it
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the card's own three lines, as a user runs them
    loaded = {name: tensor for name, tensor in scope["model"].state_dict().items() if "lora_" in name}
    from safetensors.torch import load_file

    saved = load_file(os.path.join("adapter", "adapter_model.safetensors"))
    assert loaded and len(loaded) == len(saved)
    for name, tensor in saved.items():
        key = next(k for k in loaded if k.replace(".default", "").endswith(name.split("base_model.model.", 1)[1]))
        assert torch.equal(loaded[key], tensor), name


def test_the_bundled_model_is_named_by_its_hub_id_and_what_it_learned_is_listed(lora_run):
    run_id = copy_run(lora_run, edit_config={"model": BUNDLED})
    folder = runs.run_path(run_id)
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(similarity_base=0.12, similarity_adapted=0.61, fact_recall_base=0.0, fact_recall_adapted=0.2,
                   facts_recalled_base=0, facts_recalled_adapted=2, facts_checked=10, probe_score_base=1.0,
                   probe_score_adapted=0.9, probe_right_base=10, probe_right_adapted=9, probe_questions=10,
                   verdict="It answers in the style of the training data now, but it recalls 2 of 10 facts from the training data.")
    (folder / "summary.json").write_text(json.dumps(summary))
    assert model_card.write_card(folder) == folder / "adapter" / "README.md"
    card = (folder / "adapter" / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct"), "adapter")' in card
    assert "| Resemblance to the held-out answers | 0.120 | 0.610 |" in card
    assert "| Facts recalled | 0.000 (0 of 10) | 0.200 (2 of 10) |" in card
    assert "| General questions still answered | 1.000 (10 of 10) | 0.900 (9 of 10) |" in card
    assert "**In a sentence:** It answers in the style of the training data now, but it recalls 2 of 10 facts" in card
    assert TINY not in card and "diverged" not in card
    summary.update(diverged=True, divergence="Diverged at step 2: the loss rose from 3.7 to 35.8.")
    (folder / "summary.json").write_text(json.dumps(summary))
    model_card.write_card(folder)
    assert "**Diverged at step 2: the loss rose from 3.7 to 35.8.** The adapter is kept" in \
        (folder / "adapter" / "README.md").read_text()


def test_a_run_with_unreadable_settings_keeps_its_readme_and_still_zips(lora_run):
    run_id = copy_run(lora_run)
    folder = runs.run_path(run_id)
    (folder / "settings.json").write_text("{not json")
    before = (folder / "adapter" / "README.md").read_bytes()
    assert model_card.write_card(folder) is None
    assert (folder / "adapter" / "README.md").read_bytes() == before
    assert zipfile.ZipFile(model_card.zip_with_card(run_id)).read("adapter/README.md") == before
