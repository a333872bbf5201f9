"""Tab handlers as plain functions (no browser): errors clear stale numbers, a stale exact count never shows,
merge sentences do not repeat, the decision helper resets, the demo asks first, API errors are plain text."""


import gradio as gr
import pandas as pd

from explorer.errors import ExplorerError
from explorer.learn import recommend
from explorer.methods import METHODS
from explorer.ui import calculator_tab, learn_compose, learn_tab
from explorer.ui.common import api_errors, shows_errors
from explorer.ui.calculator_tab import calc_form


class Request:
    def __init__(self, session):
        self.session_hash = session


def test_a_calculator_error_clears_the_previous_models_numbers():
    good = calculator_tab.update(calc_form("llama-2-7b", "lora"), request=Request("a"))
    assert "LoRA on llama-2-7b" in good[0] and len(good[1]) > 0
    bad = calculator_tab.update(calc_form("__pasted__", "lora", config="{not json"), request=Request("a"))
    assert bad[0].startswith("**Error:**")
    assert all(isinstance(v, pd.DataFrame) and v.empty for v in (bad[1], bad[2], bad[5], bad[7]))
    assert bad[3] == "" and bad[4] is None and bad[6] is None, "no card or chart of the old model stays"


def test_a_stale_exact_count_never_carries_the_verified_mark():
    session = Request("dragging")
    r8, r16 = calc_form("llama-2-7b", "lora", **{"lora.r": 8}), calc_form("llama-2-7b", "lora", **{"lora.r": 16})
    calculator_tab.update(r8, request=session)
    calculator_tab.update(r16, request=session)  # the slider moved on
    stale = calculator_tab.confirm_exact(r8, request=session)
    assert isinstance(stale, type(gr.skip())), "r=8's count arriving after r=16 was asked for is dropped"
    fresh = calculator_tab.confirm_exact(r16, request=session)
    assert "Verified" in fresh and "39,976,960" in fresh  # LoRA r=16 on all 7 linears of Llama-2-7B


def test_merge_sentences_say_it_once():
    for name, method in METHODS.items():
        sentence = method.merge_summary
        assert sentence.count("merge") <= 2 and "Cannot merge. Cannot merge" not in sentence, name
    assert METHODS["full"].merge_summary.startswith("Nothing to merge:")
    assert METHODS["prompt"].merge_summary.startswith("Cannot merge:")
    assert METHODS["lora"].merge_summary.startswith("Merges into the base weights: ")


def test_describe_your_own_job_resets_every_field():
    scenario = learn_tab.fill_scenario("support-bot-70b")
    assert scenario[0] == "llama-2-70b"
    assert learn_tab.fill_scenario("") == [getattr(recommend.Job(), f.name) for f in learn_tab.JOB_FIELDS]


def test_the_demo_says_what_it_will_train_before_it_starts(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    text, confirm = learn_compose.propose_demo()
    assert "trains 6 run(s)" in text and "steps of prefix on french" in text
    assert "Confirm: train them" in text and confirm.visible is True
    text, _ = learn_compose.propose_demo(["lora", "prefix"])
    assert "trains 4 run(s)" in text and "prompt-" not in text
    text, _ = learn_compose.propose_demo([])
    assert text.startswith("**Error:** Choose at least one method for the demo runs")
    assert list((tmp_path / "runs").iterdir()) == [], "nothing was queued by asking"


def test_api_errors_are_plain_text_and_page_errors_are_markdown():
    @api_errors
    def api():
        raise ExplorerError("r must be <= 4096 & > 0")

    @shows_errors(outputs=2, at=1, blank={0: ""})
    def page():
        raise ExplorerError("r must be <= 4096 & > 0")

    assert api() == {"error": "r must be <= 4096 & > 0"}
    assert page() == ("", "**Error:** r must be &lt;= 4096 &amp; &gt; 0")
    assert calculator_tab.calc("llama-2-7b", "lora", '{"r": -1}') == {"error": "r must be between 1 and 4096, got -1."}


def test_the_calculator_reads_only_the_chosen_methods_options_by_name():
    form = calc_form("llama-2-7b", "lora", **{"lora.r": 8, "dora.r": 64, "batch_size": 4})
    r = calculator_tab.compute(form, "cached")
    assert r.options.r == 8 and r.settings.batch_size == 4, "DoRA's widget on the same page is not LoRA's rank"
    assert set(form) >= {"model", "config", "method", "lora.r", "prompt.num_virtual_tokens", "seq_len"}
