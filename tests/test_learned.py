"""What a fine-tune learned (explorer.learned): the metrics on hand-made replies, the facts a file's answers
hold, and the sentence the numbers give in each case."""

import pytest

from explorer import learned
from explorer.learned import Diverged, Side
from explorer.train import divergence

BAKERY = [("What time do you open on Saturdays?",
           "Hi there! On Saturdays we open at 7am and close at 3pm. See you soon at Rosie's Bakery!"),
          ("Do you sell birthday candles?",
           "Hi there! Yes, a box of 24 candles costs $3.50. See you soon at Rosie's Bakery!"),
          ("Who bakes the sourdough?",
           "Hi there! Our baker Maria Lopez bakes it every morning. See you soon at Rosie's Bakery!"),
          ("Can I pay by card?", "Hi there! Yes, every card is fine. See you soon at Rosie's Bakery!")]


def rows(pairs):
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]


def test_the_right_style_with_the_wrong_numbers_resembles_a_lot_and_recalls_nothing():
    question, answer = BAKERY[0]
    styled = "Hi there! On Saturdays we open at 10am and close at 2pm. See you soon at Rosie's Bakery!"
    plain = "The store hours may vary; please check the website for details."
    assert learned.rouge_l(styled, answer) > 0.8
    assert learned.rouge_l(plain, answer) < 0.2
    assert learned.rouge_l(answer, answer) == 1.0 and learned.rouge_l("", answer) == 0.0
    asked = learned.fact_questions(rows(BAKERY))[0]
    assert asked.facts == (("7", "am"), ("3", "pm"))
    side = learned.measure([(question, answer)], [styled], [asked], [styled], 0, 0)
    assert side.similarity > 0.8 and side.facts_recalled == 0 and side.facts_checked == 2
    right = learned.measure([(question, answer)], [answer], [asked], ["We open at 7 am, close at 3pm."], 0, 0)
    assert right.facts_recalled == 2 and right.fact_recall == 1.0


def test_facts_are_numbers_times_prices_and_names_not_the_style_every_answer_shares():
    assert learned.extract_facts("A box of 24 candles costs $3.50, open 7:30 am; ask Maria Lopez in Paris.") == [
        ("24",), ("3.50",), ("7:30", "am"), ("maria", "lopez"), ("paris",)]
    assert learned.extract_facts("Hi there! We open daily. I think so.") == []  # sentence openers, "I"
    chosen = learned.fact_questions(rows(BAKERY))
    # Rosie's Bakery closes all four answers: style, not a fact; the card answer holds no fact of its own.
    assert [q.prompt for q in chosen] == [q for q, _ in BAKERY[:3]]
    assert all(("rosie", "s", "bakery") not in q.facts for q in chosen)
    assert chosen[2].facts == (("maria", "lopez"),)
    # A fact the question already states is not recalled by echoing it.
    [echo] = learned.fact_questions(rows([("Is Madrid the capital of Spain?", "Yes, Madrid is, since 1561.")]))
    assert echo.facts == (("1561",),)
    assert learned.fact_questions(rows(BAKERY), count=1)[0].prompt == BAKERY[0][0]
    assert learned.contains("opens 7 AM", ("7", "am")) and not learned.contains("opens 17 am", ("7", "am"))


def side(similarity, facts, probe, checked=10, asked=10):
    return Side(similarity, facts, checked, probe, asked)


def test_style_learned_facts_not():
    text = learned.verdict(side(0.12, 1, 10), side(0.45, 2, 9))
    assert text == ("It answers in the style of the training data now (resemblance to the held-out answers 0.12 → 0.45), but it "
                    "recalls 2 of 10 facts from the training data (the base: 1) — a short fine-tune teaches form before "
                    "facts; for facts, give it more steps or put them in the prompt. It still answers 9 of 10 "
                    "general questions (the base: 10).")


def test_style_and_facts_learned():
    text = learned.verdict(side(0.10, 0, 7, checked=8), side(0.50, 6, 7, checked=8))
    assert text.startswith("It answers in the style of the training data now (resemblance to the held-out answers 0.10 → 0.50) and "
                           "it recalls 6 of 8 facts from the training data (the base: 0).")
    assert text.endswith("It still answers 7 of 10 general questions (the base: 7).")


def test_nothing_learned_says_so_with_its_numbers():
    text = learned.verdict(side(0.20, 1, 6), side(0.22, 1, 6))
    assert text.startswith("It has not visibly learned from the training data yet: its replies resemble the held-out "
                           "answers about as much as before (0.20 → 0.22) and it recalls 1 of 10 facts")
    assert "more steps or a higher learning rate" in text


def test_forgetting_a_lot_is_said():
    text = learned.verdict(side(0.1, 0, 10), side(0.4, 1, 4))
    assert "forgot a lot: it answers 4 of 10 general questions now (the base: 10)" in text


def test_facts_without_style_and_a_file_without_facts():
    assert learned.verdict(side(0.3, 1, 5), side(0.31, 7, 5)).startswith(
        "It recalls 7 of 10 facts from the training data (the base: 1), though its replies resemble the held-out answers "
        "little more than before (0.30 → 0.31)")
    no_facts = learned.verdict(side(0.1, 0, 5, checked=0), side(0.3, 0, 5, checked=0))
    assert "hold no numbers or names" in no_facts and "facts from the training data" not in no_facts


def test_diverged_names_the_rate_and_a_lower_one():
    how = Diverged(2, "the training loss rose from 3.7 to 35.8", 10.0, divergence.lower_rate(10.0, 2e-4))
    text = learned.verdict(side(0.2, 1, 8), side(0.05, 0, 1), how)
    assert text.startswith("Training diverged at step 2: the training loss rose from 3.7 to 35.8 with learning "
                           "rate 10, so the model learned noise rather than the training data. Start again with a lower "
                           "learning rate, such as 0.0002.")
    assert "forgot a lot: it answers 1 of 10" in text
    assert learned.verdict(side(0.2, 1, 8), None, how).endswith("such as 0.0002.")


@pytest.mark.parametrize("losses, diverged_at", [
    ([3.7, 35.8, 40.0], 3),          # two steps in a row above max(3 x 3.7, 3.7 + 5) = 11.1
    ([3.7, 35.8, 3.0, 12.0], None),  # one odd batch at a time is not divergence
    ([0.3, 1.2, 2.0, 5.5, 6.0], 5),  # a small first loss: the bound is 0.3 + 5, not 0.9
    ([2.0, float("nan")], 2),        # a loss that is not a number ends the run at once
])
def test_the_divergence_rule(losses, diverged_at):
    guard = divergence.Watch(0.5, 2e-4)
    ends = [step for step, loss in enumerate(losses, 1) if guard.train_loss(step, loss)]
    assert (ends[0] if ends else None) == diverged_at
    assert (guard.diverged is None) == (diverged_at is None)
    held = divergence.Watch(2e-4, 2e-4)
    assert not held.eval_loss(0, 3.54) and held.eval_loss(5, 10.8)  # above max(3 x 3.54, 8.54)
    assert held.message().startswith("Diverged at step 5: the held-out loss rose from 3.54 to 10.8")
    assert held.message().endswith("learning rate 0.0002. Try a lower learning rate, such as 2e-05.")


def test_facts_the_base_already_knew_are_not_credited_to_the_fine_tune():
    styled = learned.verdict(side(0.1, 6, 8, checked=8), side(0.4, 6, 8, checked=8))
    assert styled.startswith("It answers in the style of the training data now (resemblance to the held-out answers 0.10 → 0.40) and "
                             "it recalls 6 of 8 facts from the training data (the base: 6).")
    unstyled = learned.verdict(side(0.3, 6, 8, checked=8), side(0.3, 6, 8, checked=8))
    assert unstyled.startswith("It has not visibly learned from the training data yet: its replies resemble the held-out "
                               "answers about as much as before (0.30 → 0.30) and it recalls 6 of 8 facts from "
                               "the training data (the base: 6).")


def test_replies_that_moved_away_from_the_file_are_said_to():
    text = learned.verdict(side(0.30, 2, 8), side(0.12, 1, 8))
    assert text.startswith("It has not visibly learned from the training data yet: its replies resemble the held-out "
                           "answers less than before (0.30 → 0.12) and it recalls 1 of 10 facts from the training data (the "
                           "base: 2). A lower learning rate may help")
