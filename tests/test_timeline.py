"""Watch it learn: the watched questions answered at step 0 and every few steps of a real run (tiny model), the
training unchanged by it, its settings' bounds and off switch, and the page's timeline from hand-made events."""

import re

import pytest
from conftest import TINY, train_run

from explorer.data import tasks
from explorer.errors import ExplorerError
from explorer.train import runs, timeline
from explorer.train.config import TrainConfig
from explorer.ui import timeline_view


def tiny_tokenizer():
    from transformers import AutoTokenizer

    from explorer.models import registry

    return AutoTokenizer.from_pretrained(registry.resolve(TINY).location)


def log_of(run_id: str) -> list[dict]:
    return runs.read_log(runs.run_path(run_id))


def watch_events(events: list[dict]) -> tuple[list[dict], list[dict]]:
    return ([e for e in events if e["event"] == "watch"], [e for e in events if e["event"] == "replies"])


# --------------------------------------------------------------------------- a real run


def test_a_run_answers_the_watched_questions_at_step_0_every_n_steps_and_the_end(cache):
    run_id = train_run("lora", steps=7, watch_every=3, watch_prompts=2)
    events = log_of(run_id)
    plans, snapshots = watch_events(events)
    held_out = tasks.load_examples("pirate", "heldout")
    assert len(plans) == 1
    plan = plans[0]
    # Two questions spread over the 48 held-out rows: rows 0 and 24, with the data's own answers.
    assert plan["questions"] == [held_out[0]["messages"][0]["content"], held_out[24]["messages"][0]["content"]]
    assert plan["references"] == [held_out[0]["messages"][1]["content"], held_out[24]["messages"][1]["content"]]
    assert plan["steps"] == [0, 3, 6, 7] and plan["every"] == 3 and plan["new_tokens"] == timeline.reply_budget(tiny_tokenizer(), plan["references"])
    assert [e["step"] for e in snapshots] == [0, 3, 6, 7]
    assert [e["next_step"] for e in snapshots] == [3, 6, 7, None]
    for snapshot in snapshots:
        assert len(snapshot["replies"]) == 2 and len(snapshot["cut"]) == 2
        assert all(isinstance(cut, bool) for cut in snapshot["cut"])
        assert all(isinstance(reply, str) and reply for reply in snapshot["replies"])  # a random model babbles
        assert snapshot["seconds"] > 0
    # Step 0's replies come before the first step; each later snapshot right after its step.
    order = [(e["event"], e.get("step")) for e in events if e["event"] in ("step", "replies")]
    assert order[0] == ("replies", 0)
    for step in (3, 6, 7):
        assert order[order.index(("step", step)) + 1] == ("replies", step)
    # The page reads the same log back (a reload shows the same timeline).
    shown = timeline_view.read_timeline(events)
    assert [step for step, _ in shown.snapshots] == [0, 3, 6, 7]
    assert shown.snapshots[-1][1] == snapshots[-1]["replies"]
    page = timeline_view.timeline_html(events, finished=True)
    assert plan["questions"][1] in page.replace("&#x27;", "'")


def test_the_watch_leaves_training_unchanged_and_its_off_switch_logs_nothing(cache):
    watched = log_of(train_run("lora", steps=4, watch_every=2))
    unwatched = log_of(train_run("lora", steps=4, watch_every=0))
    assert watch_events(unwatched) == ([], [])
    assert [e["step"] for e in watch_events(watched)[1]] == [0, 2, 4]
    # Generation with the adapter unfolded changes no weight and draws no random number: the same losses.
    losses = [[e["loss"] for e in events if e["event"] == "step"] for events in (watched, unwatched)]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert timeline_view.timeline_html(unwatched, finished=True) == ""


def test_a_stop_during_the_watch_logs_no_cut_short_snapshot():
    logged = []
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Arr."}]}]
    watch = timeline.Watch(10, 5, rows, 3, tokenizer=None, device="cpu", on_event=logged.append,
                           should_stop=lambda: True, new_tokens=4)
    assert watch.on and watch.questions == ["Hi?"] and watch.references == ["Arr."]
    watch.after_step(model=None, step=5)  # stopped: returns before generating
    assert logged == []


# --------------------------------------------------------------------------- settings


def test_watch_settings_bounds_and_defaults():
    default = TrainConfig()
    assert (default.watch_every, default.watch_prompts) == (5, 2)  # on by default for chat runs
    assert TrainConfig.parse({"watch_every": "0"}).watch_every == 0
    assert TrainConfig.parse({"watch_prompts": 8}).watch_prompts == 8
    for values, message in (({"watch_every": -1}, "watch_every must be between 0 and 100000, got -1."),
                            ({"watch_prompts": 0}, "watch_prompts must be between 1 and 8, got 0."),
                            ({"watch_prompts": 9}, "watch_prompts must be between 1 and 8, got 9."),
                            ({"watch_every": 2.5}, "watch_every must be a whole number, got 2.5.")):
        with pytest.raises(ExplorerError) as error:
            TrainConfig.parse(values)
        assert str(error.value) == message


def test_snapshot_steps_and_the_questions_asked():
    assert timeline.snapshot_steps(20, 5) == [0, 5, 10, 15, 20]
    assert timeline.snapshot_steps(7, 3) == [0, 3, 6, 7]
    assert timeline.snapshot_steps(3, 5) == [0, 3]
    assert timeline.snapshot_steps(20, 0) == []
    rows = [{"n": i} for i in range(48)]
    assert timeline.watched_rows(rows, 3) == [{"n": 0}, {"n": 16}, {"n": 32}]
    assert timeline.watched_rows(rows[:2], 3) == [{"n": 0}, {"n": 1}]
    assert timeline.watched_rows([], 3) == []
    off = timeline.Watch(20, 0, rows, 3, None, "cpu", on_event=lambda e: pytest.fail("logged while off"))
    assert not off.on
    off.after_step(None, 0)


def test_the_reply_budget_follows_the_longest_data_answer_within_bounds(cache):
    tokenizer = tiny_tokenizer()
    answer = "Arr, the capital o' Spain be Madrid, me hearty."
    length = len(tokenizer.encode(answer, add_special_tokens=False))
    assert timeline.MIN_NEW_TOKENS <= length + timeline.MARGIN_TOKENS <= timeline.MAX_NEW_TOKENS
    assert timeline.reply_budget(tokenizer, ["Positive", answer]) == length + timeline.MARGIN_TOKENS
    assert timeline.reply_budget(tokenizer, ["Positive"]) == timeline.MIN_NEW_TOKENS  # room for a base's sentence
    assert timeline.reply_budget(tokenizer, [answer * 5]) == timeline.MAX_NEW_TOKENS


# --------------------------------------------------------------------------- the page


def plan(steps=(0, 5, 10, 15, 20), questions=("What is 2+2?", "Name a colour.")):
    return {"event": "watch", "questions": list(questions), "references": ["Arr, 4!", "Red, matey!"][:len(questions)],
            "steps": list(steps), "every": 5, "new_tokens": 24}


def replies(step, texts, seconds=1.0, cut=None):
    return {"event": "replies", "step": step, "replies": list(texts), "cut": cut or [False] * len(texts),
            "seconds": seconds, "next_step": None}


def cells(page: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S) for row in rows]


def test_the_timeline_shows_one_row_per_question_and_marks_new_words():
    events = [plan(), {"event": "step", "step": 1, "loss": 3.0},
              replies(0, ["The answer is 4.", "Blue."], 1.0),
              replies(5, ["Arr, the answer be 4.", "Blue."], 2.0)]
    page = timeline_view.timeline_html(events, finished=False)
    table = cells(page)
    header, first, second = table
    assert [re.sub("<[^>]+>", " ", h).split() for h in header] == [
        ["Question"], ["Step", "0", "before", "training"], ["Step", "5"], ["Step", "10"]]  # 10: the next, waiting
    assert "What is 2+2?" in first[0] and "The data's answer: Arr, 4!" in first[0]
    assert first[1] == "The answer is 4."
    assert re.findall(r"<mark[^>]*>(.*?)</mark>", first[2]) == ["Arr,", "be"]  # words new since step 0
    assert "answering at step 10" in first[3]
    assert "(same)" in second[2] and "<mark" not in second[2]
    assert "By step 5, 1 of 2 replies differ from the model's answers before training." in page
    assert "Each snapshot took 1.5 s to answer (measured; 3.0 s in all" in page
    assert "answered at step 0 (before training), every 5 steps and at the end (greedy, up to 24 new tokens)" in page
    finished = cells(timeline_view.timeline_html(events, finished=True))  # stopped at step 5: nothing waits
    assert len(finished[0]) == 3 and "answering" not in str(finished)


def test_the_timeline_escapes_replies_and_limits_its_columns():
    steps = list(range(0, 101, 5))
    events = [plan(steps, questions=("<b>Q</b>",))] + [replies(s, [f"<script>x</script> reply {s}"]) for s in steps]
    page = timeline_view.timeline_html(events, finished=True)
    assert "<script>" not in page and "<b>Q</b>" not in page and "&lt;b&gt;Q&lt;/b&gt;" in page
    header = [re.sub("<[^>]+>", " ", h).split()[:2] for h in cells(page)[0]]
    assert header == [["Question"], ["Step", "0"], ["Step", "25"], ["Step", "50"], ["Step", "75"], ["Step", "100"]]
    assert "Showing 5 of 21 snapshots" in page
    assert timeline_view.shown_columns([0, 5, 10]) == [0, 1, 2]


def test_the_timeline_before_its_first_snapshot_and_without_a_watch():
    assert timeline_view.timeline_html([], finished=False) == ""
    assert timeline_view.timeline_html([{"event": "step", "step": 1, "loss": 2.0}], finished=True) == ""
    waiting = cells(timeline_view.timeline_html([plan()], finished=False))
    assert re.sub("<[^>]+>", " ", waiting[0][1]).split() == ["Step", "0"]
    assert "answering at step 0" in waiting[1][1]
    unchanged = [plan(), replies(0, ["a", "b"]), replies(5, ["a", "b"])]
    assert "By step 5 no reply has changed yet." in timeline_view.timeline_html(unchanged)
    empty = timeline_view.timeline_html([plan(), replies(0, ["", "b"])], finished=True)
    assert "(no reply: the model ended at once)" in empty
    cut = cells(timeline_view.timeline_html([plan(), replies(0, ["a long", "b."], cut=[True, False])], finished=True))
    assert cut[1][1] == "a long" + timeline_view.CUT_MARK and cut[2][1] == "b."
