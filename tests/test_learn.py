"""Learn tab: method cards and comparisons from the calculator, the decision helper's API, and the page."""

import re

import pytest
from conftest import train_run, wait_for_text

from explorer import calculator
from explorer.costs import memory
from explorer.learn import cards as learn
from explorer.learn import recommend
from explorer.methods import METHODS
from explorer.models import specs as model_specs
from explorer.ui.learn_tab import recommendation_markdown


@pytest.mark.parametrize("model", ["llama-2-7b", "smollm2-135m-instruct"])
def test_every_method_has_a_card_whose_numbers_are_the_calculators(model, cache):
    settings = memory.TrainSettings(batch_size=4, seq_len=512, precision="bf16")
    cards = {c["method"]: c for c in learn.guide(model, settings)}
    assert set(cards) == set(METHODS)
    spec = model_specs.resolve(model)
    for name, card in cards.items():
        r = calculator.calculate(spec, name, METHODS[name].parse_options({}), settings, exact_mode="skip")
        assert card["trainable"] == r.trainable_formula and card["training_memory_bytes"] == r.training.total_bytes
        assert card["mergeable"] == METHODS[name].mergeable and "<svg" in card["svg"]


def box_fills(svg: str) -> dict[str, str]:
    """Each box's label -> its fill colour in a block diagram."""
    return {label: fill for fill, label in re.findall(r'<rect [^>]*fill="(#[0-9a-f]+)"[^>]*/><text [^>]*>([^<]+)</text>',
                                                      svg)}


def test_the_block_diagram_colours_what_vera_and_ln_tuning_train():
    from explorer.learn.diagram import FROZEN, HIGHLIGHT, block_svg

    spec = model_specs.resolve("smollm2-135m")
    for method, options, trained, frozen in (
            ("vera", {"target_preset": "q,v"}, {"q_proj", "v_proj"}, {"k_proj", "o_proj", "down_proj"}),
            ("ln_tuning", {"target_modules": "post_attention_layernorm"}, {"post_attention_layernorm"},
             {"input_layernorm", "q_proj"})):
        m = METHODS[method]
        fills = box_fills(block_svg(spec.arch, m.adaptation(spec, m.parse_options(options)), m.title))
        assert {fills[name] for name in trained} == {HIGHLIGHT}, (method, fills)
        assert {fills[name] for name in frozen} == {FROZEN}, (method, fills)


def test_cards_show_the_chapters_claims_beside_exact_values():
    lora = learn.method_card(model_specs.resolve("llama-2-7b"), "lora")
    claim = lora["claims"][0]
    assert claim["claimed"] == 5e6 and claim["exact"] == 19_988_480, "LoRA r=8 all-linear on Llama-2-7B"


def test_side_by_side_lists_real_runs_of_each_method(cache):
    run_id = train_run("ia3", steps=1, batch_size=2, eval_every=5)
    result = learn.side_by_side("smollm2-135m-instruct", "ia3", "lora")
    assert result["runs"]["ia3"][0]["run_id"] == run_id
    assert result["cards"]["ia3"]["trainable"] < result["cards"]["lora"]["trainable"]


def test_recommendation_text_names_method_runner_up_and_numbers():
    rec = recommend.recommend(recommend.SCENARIOS["support-bot-70b"].job)
    text = recommendation_markdown(rec)
    assert "Recommended: QLoRA" in text and f"{rec.calculation['trainable_params']:,}" in text


def test_browser_learn_cards_follow_the_model(app_url, page, screenshot):
    page.goto(app_url)
    page.get_by_role("tab", name="Learn").click()
    wait_for_text(page, "#learn-cards", "19,988,480 trainable on llama-2-7b")
    page.locator("#learn-model input").click()
    page.get_by_role("option", name=re.compile("smollm2-135m-instruct")).first.click()
    expected = calculator.calculate(model_specs.resolve("smollm2-135m-instruct"), "lora", METHODS["lora"].parse_options({}),
                                    exact_mode="skip").trainable_formula
    wait_for_text(page, "#learn-cards", f"{expected:,} trainable on smollm2-135m-instruct")
    page.locator("#learn-recommend").click()
    wait_for_text(page, "#learn-advice", "Recommended:")
    screenshot("learn_tab")
