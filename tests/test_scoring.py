"""Scoring after training: the task and the forgetting probe from one generation batch, and the adapter folded
into the weights while the trained model generates (then unfolded, exactly where PEFT can)."""

import pytest
import torch
from conftest import TINY

from explorer import scored
from explorer.data import probe, sources, tasks
from explorer.evaluate import generate_replies, user_and_reference
from explorer.methods import METHODS
from explorer.models import loading
from explorer.models import specs as model_specs
from explorer.train.loop import merged_while_scoring


@pytest.fixture(scope="module")
def tiny(cache):
    loaded = loading.load_fresh(TINY, precision="fp32")
    return loaded.model.eval(), loaded.tokenizer


def test_one_batch_scores_each_part_against_its_own_references(tiny):
    model, tok = tiny
    rows = sources.load_dataset("pirate")[1][:3]
    seen = []
    task = tasks.Task("t", "recording", "", "", lambda reply, reference: seen.append((reply, reference)) or 0.5)
    task_score, probe_score = scored.task_and_probe_scores(model, tok, rows, task, 4, 3, "cpu")
    assert task_score == 0.5 and [ref for _, ref in seen] == [user_and_reference(r)[1] for r in rows]
    questions = probe.subset(4)
    replies = generate_replies(model, tok, [user_and_reference(r)[0] for r in rows] + [q["question"] for q in questions],
                               3, "cpu")
    assert [reply for reply, _ in seen] == replies[:3], "the task is scored on its own rows' replies"
    assert probe_score == sum(probe.score_reply(r, q["answers"]) for r, q in zip(replies[3:], questions)) / 4
    assert scored.task_and_probe_scores(model, tok, rows, None, 0, 3, "cpu") == (None, None)
    assert scored.task_and_probe_scores(model, tok, [], task, 2, 3, "cpu")[0] is None
    stopped = scored.task_and_probe_scores(model, tok, rows, task, 2, 3, "cpu", should_stop=lambda: True)
    assert stopped == (None, None)


@pytest.mark.parametrize("method, folds", [("lora", True), ("dora", True), ("ia3", True), ("vera", True),
                                           ("prompt", False), ("adapter", False)])
def test_the_adapter_is_folded_while_scoring_and_unfolded_after(cache, method, folds):
    loaded = loading.load_fresh(TINY, precision="fp32")
    spec = model_specs.resolve(TINY)
    m = METHODS[method]
    model = m.apply(loaded.model, spec, m.parse_options({}))
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: move every trainable tensor off its (often identity) start
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = model(input_ids=ids).logits
    with merged_while_scoring(model, m):
        inside = model(input_ids=ids).logits
        folded = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert bool(folded) == folds, folded
    assert (inside - adapted).abs().max() < 1e-4, f"merged generation scores the same function: {(inside - adapted).abs().max()}"
    for name, p in model.named_parameters():
        assert torch.allclose(p, before[name], atol=1e-6), f"{name} is back to its trained value"


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].data_kind(METHODS[m].parse_options({})) == "chat"])
def test_the_loss_on_targets_equals_transformers_loss(cache, method):
    """loss_on_targets projects only the positions that predict a target; the value must be the model's own
    loss (prompt tuning's virtual tokens, prefix tuning's past keys and QLoRA's 4-bit base included)."""
    from explorer.data import chat
    from explorer.evaluate import _keeps_logits, loss_on_targets

    m = METHODS[method]
    if m.training_loss is not None:
        pytest.skip("PEFT adds this method's regulariser to the model's own loss (AdaLoRA's orthogonality "
                    "penalty); tests/test_adalora_and_inits.py checks that difference exactly")
    loaded = loading.load_fresh(TINY, m, m.parse_options({}), precision="fp32")
    model = m.apply(loaded.model, model_specs.resolve(TINY), m.parse_options({}))
    torch.manual_seed(0)
    with torch.no_grad():  # away from identity starts, so every method's adapter takes part in the loss
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    tok = loaded.tokenizer
    encoded, _ = chat.encode_dataset(tok, sources.load_dataset("pirate")[0][:3], 96)
    batch = chat.collate(encoded, chat.pad_id(tok))  # three lengths: padding, and targets starting apart
    assert _keeps_logits(model) and bool((batch["labels"][:, :20] == -100).all()), "the short path is taken"
    model.eval()
    with torch.no_grad():
        ours, theirs = float(loss_on_targets(model, batch)), float(model(**batch).loss)
    assert abs(ours - theirs) < 1e-5 * max(1.0, abs(theirs)), (ours, theirs)
