"""Feature extraction for real: labelled text and paraphrase pairs (bundled and uploaded, checked row by row), a
classifier head against the majority class and against LoRA, a sentence-embedding head against the frozen base,
Compare's per-text table, the CLI, and a browser run that shows the confusion matrix."""

import json
import re

import pytest
import torch
from conftest import BUNDLED, TINY, train_run, wait_for_text

from explorer.compare import variants as compare
from explorer.data import labelled, sources
from explorer.errors import ExplorerError
from explorer.train import head_eval, runs
from explorer.ui import dataset_picker, finetune_tab, head_view

CLASSIFIER = {"head_type": "classifier"}
EMBEDDING = {"head_type": "embedding", "embedding_dim": 64}


def run_cli(argv, capsys):
    from explorer.cli.main import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_bundled_sets_are_balanced_and_separate():
    train, heldout = labelled.load("topics", "labelled")
    assert (len(train), len(heldout)) == (176, 56)
    for rows, per_class in ((train, 44), (heldout, 14)):
        assert {label: sum(r["label"] == label for r in rows) for label in {r["label"] for r in rows}} == \
            {label: per_class for label in ("sports", "cooking", "weather", "technology")}
    assert not {r["text"] for r in train} & {r["text"] for r in heldout}
    pairs, held_pairs = labelled.load("paraphrases", "pairs")
    assert (len(pairs), len(held_pairs)) == (162, 48) and all(r["a"] != r["b"] for r in pairs + held_pairs)
    sentences = [s for r in pairs + held_pairs for s in (r["a"], r["b"])]
    assert len(set(sentences)) == len(sentences), "no sentence appears twice"
    assert sources.dataset_kind("topics") == "labelled" and sources.dataset_kind("paraphrases") == "pairs"


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", '{"text": "a goal", "label": "sports"}\n{"text": "rain"}\n{"text": "soup", "label": "cooking"}',
     'line 2: missing field "label"'),
    ("empty.jsonl", '{"text": "a goal", "label": "sports"}\n{"text": "  ", "label": "weather"}\n'
                    '{"text": "soup", "label": "cooking"}', 'line 2: "text" is empty'),
    ("labels.csv", "text,label\na goal,sports\n,weather\nsoup,cooking\nfog,\n", 'line 3: "text" is empty'),
    ("labels.csv", "text,label\na goal,sports\n,weather\nsoup,cooking\nfog,\n", 'line 5: "label" is empty'),
])
def test_bad_labelled_rows_are_reported_by_line(name, content, message):
    parsed = labelled.parse(content.encode(), name, "labelled")
    assert message in [f"line {e.line}: {e.reason}" for e in parsed.errors]
    assert {r["label"] for r in parsed.rows} >= {"sports", "cooking"}, "the good rows are kept"


def test_one_class_only_wrong_columns_and_bad_pairs_are_refused_in_one_line():
    one = "\n".join(json.dumps({"text": f"match {i}", "label": "sports"}) for i in range(6))
    with pytest.raises(ExplorerError, match="every row has the label 'sports'; a classifier needs at least 2"):
        labelled.parse(one.encode(), "one.jsonl", "labelled")
    with pytest.raises(ExplorerError, match=r"chat.csv holds chat rows \(columns prompt, response\), the data of the methods that generate text"):
        labelled.parse(b"prompt,response\nhi,hello\n", "chat.csv", "labelled")
    parsed = labelled.parse(b'{"a": "Hi there", "b": "hi  THERE"}\n{"a": "x"}\n{"a": "Go now", "b": "Leave now"}',
                            "pairs.jsonl", "pairs")
    assert [f"line {e.line}: {e.reason}" for e in parsed.errors] == [
        'line 1: "b" repeats "a" instead of paraphrasing it', 'line 2: missing field "b"']


def test_a_dataset_of_the_wrong_kind_gets_one_line_before_anything_is_made(cache, capsys):
    before = set(runs.runs_dir().iterdir())
    code, _, err = run_cli(["train", "--model", TINY, "--method", "head", "--set", "head_type=classifier",
                            "--dataset", "pirate", "--steps", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs labelled text" in err and "'pirate' is chat data" in err
    code, _, err = run_cli(["train", "--model", TINY, "--method", "lora", "--dataset", "topics", "--steps", "2"], capsys)
    assert code == 2 and "LoRA needs chat rows" in err and "head_type=classifier" in err
    code, _, err = run_cli(["train", "--model", TINY, "--method", "head", "--set", "head_type=embedding",
                            "--dataset", "topics", "--steps", "2"], capsys)
    assert code == 2 and "needs paraphrase pairs" in err
    assert set(runs.runs_dir().iterdir()) == before, "no run folder for a refused dataset"


@pytest.fixture(scope="module")
def tiny_classifier(cache):
    return train_run("head", dataset="topics", options=CLASSIFIER, steps=6, batch_size=8, learning_rate=1e-2,
                     eval_every=3)


def test_a_classifier_head_trains_only_its_head_and_saves_what_compare_needs(tiny_classifier):
    run = runs.read_run(runs.run_path(tiny_classifier))
    s = run.summary
    assert s["trainable_params"] == s["calculator_trainable_params"] == 32 * 4 + 4  # d·classes + classes, 4 classes
    assert s["labels"] == ["cooking", "sports", "technology", "weather"]
    assert sum(map(sum, s["confusion_matrix"])) == 56 and len(s["confusion_matrix"]) == 4
    assert s["eval_accuracy"] == pytest.approx(sum(s["confusion_matrix"][i][i] for i in range(4)) / 56)
    assert s["eval_accuracy_base"] == pytest.approx(0.25) and s["task_score_base"] == s["eval_accuracy_base"]
    lora = s["lora_comparison"]
    assert lora["trainable_params"] > s["trainable_params"] and 0 <= lora["accuracy"] <= 1
    adapter = run.folder / runs.ADAPTER_DIR
    assert (adapter / "labels.json").is_file() and (adapter / "lora_comparison" / "adapter_model.safetensors").is_file()
    events = runs.read_log(run.folder)
    assert [e["step"] for e in events if "eval_loss" in e] == [0, 3, 6]
    figure = head_view.head_figure(events)  # what the Fine-tune tab draws: the loss and the confusion matrix
    assert [t.type for t in figure.data] == ["scatter", "scatter", "heatmap"]
    assert figure.data[2].z == tuple(map(tuple, s["confusion_matrix"])) or \
        [list(row) for row in figure.data[2].z] == s["confusion_matrix"]
    lines = "\n".join(head_view.metric_lines(events))
    assert f"trained head **{s['eval_accuracy']:.2f}**" in lines and f"{lora['trainable_params']:,} trainable" in lines


def test_compare_shows_each_heldout_text_with_its_label_and_each_models_answer(tiny_classifier):
    run = runs.read_run(runs.run_path(tiny_classifier))
    result = compare.run_comparison(tiny_classifier, "")
    assert result["kind"] == "classification" and len(result["rows"]) == 56
    assert result["columns"] == ["majority class", "trained head", "LoRA on a sequence-classification model"]
    assert all(row["true"] in run.summary["labels"] for row in result["rows"])
    # Recomputed from the saved files, the accuracies are the run's own.
    assert result["accuracy"]["trained head"] == pytest.approx(run.summary["eval_accuracy"])
    assert result["accuracy"]["LoRA on a sequence-classification model"] == \
        pytest.approx(run.summary["lora_comparison"]["accuracy"])
    assert result["accuracy"]["majority class"] == pytest.approx(run.summary["eval_accuracy_base"])
    typed = compare.run_comparison(tiny_classifier, "The oven is hot")
    assert typed["rows"][0]["true"] is None and typed["scored_rows"] == 0
    assert compare.heldout_prompts(tiny_classifier)[0] == labelled.load("topics", "labelled")[1][0]["text"]
    with pytest.raises(ExplorerError, match="labels or vectors, not replies"):
        compare.measure_cost(tiny_classifier, "hello")


def test_an_uploaded_pair_set_trains_an_embedding_head_and_compare_retrieves(cache, tmp_path):
    rows = labelled.load("paraphrases", "pairs")[0][:40]
    path = tmp_path / "my pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    run_id = train_run("head", dataset=str(path), options=EMBEDDING, steps=4, batch_size=8)
    s = runs.read_run(runs.run_path(run_id)).summary
    assert s["trainable_params"] == s["calculator_trainable_params"] == 32 * 64 + 64
    assert len(s["similarity"]) == 6 and 0 <= s["eval_recall_at_1_base"] <= 1
    result = compare.run_comparison(run_id, None)
    assert result["kind"] == "embedding" and len(result["rows"]) == 8  # the last fifth of 40 is held out
    assert result["accuracy"]["trained head"] == pytest.approx(s["eval_recall_at_1"])
    assert result["accuracy"]["base (mean-pooled, untrained)"] == pytest.approx(s["eval_recall_at_1_base"])


def test_metrics_are_the_textbook_ones():
    assert head_eval.macro_f1([0, 0, 1, 1], [0, 1, 1, 1], 2) == pytest.approx((2 / 3 + 0.8) / 2)
    assert head_eval.macro_f1([0, 0, 0], [0, 1, 2], 3) == pytest.approx((0.5 + 0 + 0) / 3)
    assert head_eval.confusion([1, 0], [0, 0], 2) == [[1, 1], [0, 0]]
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert head_eval.recall_at_1(a, torch.tensor([[2.0, 0.1], [0.0, 3.0], [-1.0, 0.2]])) == pytest.approx(2 / 3)


def test_the_fine_tune_tab_offers_the_data_the_method_needs(cache):
    def form(method, dataset):
        return finetune_tab.form_values(TINY, method, dataset, **{"head.head_type": "classifier"})

    assert finetune_tab.kind_for_method(form("head", "pirate"), "chat") == "labelled"
    _, info = finetune_tab.data_for_kind("labelled", "pirate")
    assert "sports, cooking, weather or technology" in info
    assert finetune_tab.kind_for_method(form("lora", "topics"), "labelled") == "chat"
    _, info = finetune_tab.data_for_kind("chat", "topics")
    assert info == dataset_picker.describe_dataset("pirate")
    assert finetune_tab.kind_for_method(form("lora", "french"), "chat") == "chat"
    assert finetune_tab.kind_for_method(form("head", "french") | {"head.head_type": "nonsense"}, "chat") == "chat"
    choices, value = dataset_picker.dataset_choices("labelled", "pirate")
    assert value == "topics" and [v for _, v in choices] == ["topics", dataset_picker.UPLOAD]
    assert dataset_picker.dataset_choices("chat", "french")[1] == "french"
    parsed = dataset_picker.read_upload(None, "text,label\nGoal!,sports\nRain,weather\n", "labelled")
    assert [r["label"] for r in parsed.rows] == ["sports", "weather"]
    preview, _, info = dataset_picker.check_data(None, '{"a": "Hi", "b": "Hello"}', "pairs")
    assert list(preview.columns) == ["line", "a", "b"] and "1 valid row" in info


def _upload(tmp_path, name: str, rows: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return str(path)


def test_on_real_features_both_heads_beat_their_baselines(cache, tmp_path, capsys):
    """The bundled model's features (the tiny model's random ones carry nothing to learn), on small parts of the
    bundled sets, because every text read costs a SmolLM2 forward: the first 6 training texts of each topic and the
    first 6 held-out texts (30 texts); the first 32 training pairs and the last 8 held-out pairs (80 sentences),
    the window of 8 where the untrained base mixes up one pair (7/8; a trained head got 8/8 with each of seeds
    0-3). Through the CLI, whose --json carries the heads' metrics. The whole sets: see each set's README."""
    train, heldout = labelled.load("topics", "labelled")
    by_label = {label: [r for r in train if r["label"] == label][:6] for label in sorted({r["label"] for r in train})}
    # Interleaved by label, as bundled; an upload's last fifth (here the 6 held-out texts) is held out.
    topics = [rows[i] for i in range(6) for rows in by_label.values()] + heldout[:6]
    code, out, err = run_cli(["train", "--model", BUNDLED, "--method", "head", "--set", "head_type=classifier",
                              "--dataset", _upload(tmp_path, "topics.jsonl", topics), "--steps", "20", "--set",
                              "batch_size=8", "--set", "lora_comparison=false", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    majority_share = sum(r["label"] == "cooking" for r in heldout[:6]) / 6  # a tie: the first label sorted
    assert result["eval_accuracy_base"] == pytest.approx(majority_share) and majority_share < 0.5
    assert result["eval_accuracy"] >= 5 / 6 and result["eval_macro_f1"] >= 0.7 and "lora_comparison" not in result
    pairs, held_pairs = labelled.load("paraphrases", "pairs")
    code, out, err = run_cli(["train", "--model", BUNDLED, "--method", "head", "--set", "head_type=embedding",
                              "--dataset", _upload(tmp_path, "pairs.jsonl", pairs[:32] + held_pairs[-8:]),
                              "--steps", "60", "--set", "batch_size=16", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["eval_recall_at_1"] > result["eval_recall_at_1_base"], result


def test_browser_trains_a_classifier_head_and_shows_the_confusion_matrix(app_url, page, screenshot):
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_role("combobox", name="Model").first.click()
    page.get_by_role("option", name=TINY).click()
    page.get_by_role("combobox", name="Method").first.click()
    page.get_by_role("option", name="Feature extraction (head only)").click()
    page.get_by_text("Advanced: every method option and training setting").click()  # the method's options
    page.get_by_role("combobox", name="head_type").click()
    page.get_by_role("option", name="classifier", exact=True).click()
    page.wait_for_function("() => document.querySelector('#ft-dataset input').value.includes('topics')",
                           timeout=30_000)
    page.locator("#ft-max_new_tokens").wait_for(state="hidden", timeout=30_000)  # chat-only settings leave
    assert page.locator("#ft-batch_size").is_visible()
    page.locator("#ft-steps input").fill("6")
    page.locator("#ft-start").click()
    wait_for_text(page, "#ft-progress", "Finished", timeout=240_000)
    wait_for_text(page, "#ft-plot", "Confusion matrix", timeout=30_000)
    metrics = page.locator("#ft-metrics").inner_text()
    assert re.search(r"held-out accuracy: trained head [\d.]+", metrics) and "majority class" in metrics
    assert "LoRA on a sequence-classification model" in metrics
    screenshot("finetune_classifier_head")
