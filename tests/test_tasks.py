"""Tests for the bundled toy datasets and their task scorers (explorer/tasks.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from explorer.data.tasks import DATASETS_DIR, TASKS, load_examples  # noqa: E402

TASK_NAMES = ["pirate", "french", "json_extract", "sentiment"]

PLAIN_ENGLISH = [
    "The capital of Japan is Tokyo.",
    "A spider has eight legs.",
    "Boil water, pour it over a tea bag and let it steep for three minutes.",
    "Water freezes at 0 degrees Celsius.",
    "You use a hammer to drive nails.",
    "Paris is lovely in spring, and the café near the river is great.",
    "Most adults need seven to nine hours of sleep.",
    "I think the answer is 42.",
]


def replies(task: str, split: str) -> list[str]:
    return [row["messages"][1]["content"] for row in load_examples(task, split)]


def prompts(task: str, split: str) -> list[str]:
    return [row["messages"][0]["content"] for row in load_examples(task, split)]


def test_registry() -> None:
    assert list(TASKS) == TASK_NAMES
    for name, task in TASKS.items():
        assert task.name == name
        assert task.title and task.description and task.score_name
    with pytest.raises(dataclasses.FrozenInstanceError):
        TASKS["pirate"].title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_sizes_and_message_structure(task: str) -> None:
    for split, minimum in (("train", 100), ("heldout", 30)):
        rows = load_examples(task, split)
        assert len(rows) >= minimum, (task, split, len(rows))
        for row in rows:
            messages = row["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"]
            for message in messages:
                assert isinstance(message["content"], str) and message["content"].strip()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_no_heldout_prompt_in_train(task: str) -> None:
    train = set(prompts(task, "train"))
    heldout = prompts(task, "heldout")
    assert len(set(heldout)) == len(heldout)
    assert not train & set(heldout)


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_references_score_perfectly(task: str, split: str) -> None:
    refs = replies(task, split)
    assert TASKS[task].score(refs, refs) == 1.0


def test_load_examples_rejects_unknown_task_and_split() -> None:
    with pytest.raises(ValueError, match="Unknown task"):
        load_examples("klingon", "train")
    with pytest.raises(ValueError, match="Unknown split"):
        load_examples("pirate", "test")


def test_score_needs_paired_lists() -> None:
    with pytest.raises(ValueError):
        TASKS["sentiment"].score(["positive"], [])
    assert TASKS["sentiment"].score([], []) == 0.0


@pytest.mark.parametrize("task", ["pirate", "french"])
def test_plain_english_scores_zero_on_style_tasks(task: str) -> None:
    assert TASKS[task].score(PLAIN_ENGLISH, PLAIN_ENGLISH) == 0.0


def test_pirate_markers_match_whole_words_only() -> None:
    pirate = TASKS["pirate"]
    assert pirate.score_one("Arr, the sky be blue.", "") == 1.0
    assert pirate.score_one("SHIVER ME TIMBERS, it rains!", "") == 1.0
    assert pirate.score_one("Yesterday I parked near the yard.", "") == 0.0


def test_french_detector_on_simple_sentences() -> None:
    french = TASKS["french"]
    for sentence in ["Le chat dort sur le canapé.", "C'est la vie.", "Je ne sais pas.", "Il fait très beau aujourd'hui."]:
        assert french.score_one(sentence, "") == 1.0, sentence
    for sentence in ["The cat sleeps on the sofa.", "I had a croissant at a café.", "Bonjour"]:
        assert french.score_one(sentence, "") == 0.0, sentence


def test_json_references_have_the_three_keys_in_order() -> None:
    for split in ("train", "heldout"):
        for ref in replies("json_extract", split):
            data = json.loads(ref)
            assert list(data) == ["name", "age", "city"]
            assert isinstance(data["age"], int) and not isinstance(data["age"], bool)


def test_json_scorer_partial_and_wrong_replies() -> None:
    task = TASKS["json_extract"]
    ref = '{"name": "Priya Nair", "age": 29, "city": "Lyon"}'
    assert task.score_one('Sure! {"name": "Priya Nair", "age": "29", "city": " Lyon "} Done.', ref) == 1.0
    assert task.score_one('{"name": "Priya Nair", "age": 30, "city": "Lyon"}', ref) == pytest.approx(2 / 3)
    assert task.score_one('{"name": "priya nair", "age": 29}', ref) == pytest.approx(1 / 3)
    assert task.score_one('{"name": "Lyon", "age": 29.5, "city": "Priya Nair"}', ref) == 0.0
    assert task.score_one("name: Priya Nair, age: 29, city: Lyon", ref) == 0.0
    assert task.score_one('{"name": "Priya Nair", "age": 29', ref) == 0.0
    refs = replies("json_extract", "heldout")
    shifted = refs[1:] + refs[:1]
    assert task.score(shifted, refs) < 1.0


def test_sentiment_scorer_and_balance() -> None:
    task = TASKS["sentiment"]
    assert task.score_one("Positive.", "positive") == 1.0
    assert task.score_one("negative - the food was cold", "negative") == 1.0
    assert task.score_one("The sentiment is positive", "positive") == 0.0
    for split in ("train", "heldout"):
        refs = replies("sentiment", split)
        assert set(refs) == {"positive", "negative"}
        assert refs.count("positive") == refs.count("negative")
        flipped = ["negative" if r == "positive" else "positive" for r in refs]
        assert task.score(flipped, refs) == 0.0


@pytest.mark.parametrize(
    ("scorer_task", "reply_task"), [(s, r) for s in TASK_NAMES for r in TASK_NAMES if s != r]
)
def test_other_tasks_references_score_zero(scorer_task: str, reply_task: str) -> None:
    other = replies(reply_task, "heldout")
    own = replies(scorer_task, "heldout")
    references = [own[i % len(own)] for i in range(len(other))]
    assert TASKS[scorer_task].score(other, references) == 0.0


def test_generator_reproduces_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("build_datasets", DATASETS_DIR / "build_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    monkeypatch.setattr(module, "OUT_DIR", tmp_path)
    module.main()
    for task in TASK_NAMES:
        for split in ("train", "heldout"):
            name = f"{task}/{split}.jsonl"
            assert (tmp_path / name).read_bytes() == (DATASETS_DIR / name).read_bytes(), name
