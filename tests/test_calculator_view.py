"""Formatting helpers of the Calculator's family chart and tables."""

from explorer.methods import METHODS
from explorer.ui.calculator_view import label_positions, log_ticks, merges


def test_log_ticks_are_1_2_5_within_the_data():
    assert log_ticks(8.6, 78.4) == [10, 20, 50, 100]
    assert log_ticks(81_920, 6.7e9)[:3] == [1e5, 2e5, 5e5]


def test_log_ticks_of_a_narrow_range_fall_back_to_every_digit_or_to_plotly():
    assert log_ticks(3.03, 3.30) == [3, 4]
    assert log_ticks(1.01, 1.02) is None


def test_labels_of_nearby_points_do_not_share_a_position():
    # LoRA, DoRA and QLoRA on Llama-2-7B: nearly the same x, close y (log10 values)
    points = [(7.30, 1.24, "LoRA"), (7.33, 1.30, "DoRA"), (7.30, 0.94, "QLoRA"), (4.9, 1.2, "Prompt tuning"),
              (9.8, 1.9, "Full fine-tuning")]
    positions = label_positions(points)
    assert positions[0] != positions[1]
    assert positions[3] == positions[4] == "top center"  # alone: the default place


def test_full_and_head_have_nothing_to_merge():
    assert merges(METHODS["full"]) == merges(METHODS["head"]) == "nothing to merge (a new model)"
    assert merges(METHODS["lora"]) == "yes" and merges(METHODS["prefix"]) == "no"


def test_every_marker_of_the_family_chart_stays_a_marker():
    """OFT, HRA and BOFT rebuild their weight every unmerged forward (many forwards' worth of FLOPs): their
    markers are capped at the largest size instead of covering the chart, and the others keep their order."""
    from explorer import calculator
    from explorer.costs import memory
    from explorer.models import specs as model_specs
    from explorer.ui.calculator_view import family_figure

    spec = model_specs.resolve("llama-2-7b")
    results = calculator.compare_all(spec, memory.TrainSettings(), ("lora", METHODS["lora"].parse_options({})))
    sizes = {trace.name: trace.marker.size for trace in family_figure(results).data}
    assert max(sizes.values()) == 40 and min(sizes.values()) == 10, sizes
    assert 10 < sizes["LoRA"] < 11 and sizes["HRA"] == 40, "LoRA unmerged adds 0.3% of a forward; HRA is capped"
