"""Build the bundled toy fine-tuning datasets for PEFT Explorer.

Standard library only and fully seeded: running

    python3 explorer/data/datasets/build_datasets.py

rewrites <task>/train.jsonl and <task>/heldout.jsonl for the four tasks
(pirate, french, json_extract, sentiment) byte for byte.

Every line is {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}.
All text was written for this project; the script only combines hand-written
pieces. Replies are kept short so a 135M chat model can pick the behaviour up
in a couple of minutes of CPU fine-tuning.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent
SEED = 20240611
HELDOUT = {"pirate": 48, "french": 48, "json_extract": 48, "sentiment": 48}
TOTAL = {"json_extract": 208, "sentiment": 208}  # pirate/french: the whole fact pool

# ---------------------------------------------------------------------------
# pirate and french: one shared fact pool (facts.py), answered in pirate speak or in French
# ---------------------------------------------------------------------------


def _load_facts():
    """facts.py beside this file, whether this runs as a script or is loaded by path (tests/test_tasks.py)."""
    spec = importlib.util.spec_from_file_location("bundled_facts", Path(__file__).resolve().parent / "facts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fact_pool = _load_facts().fact_pool

PIRATE_OPENERS = ["Arr, matey!", "Aye!", "Ahoy, me hearty!", "Shiver me timbers!", "Yo-ho!",
                  "Avast, landlubber!", "Arr!", "Aye aye, matey!"]
PIRATE_CLOSERS = [".", ", matey!", ", me hearty.", ", ye landlubber!", ", savvy?", ", arr!", ". Yo-ho-ho!"]
PIRATE_WORDS = {"is": "be", "are": "be", "of": "o'", "you": "ye", "your": "yer", "and": "an'",
                "for": "fer", "my": "me"}


def pirateify(sentence: str) -> str:
    """Turn a plain English sentence into pirate speak (is -> be, of -> o', you -> ye, ...)."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = PIRATE_WORDS.get(word.lower())
        if new is None:
            return word
        return new[0].upper() + new[1:] if word[0].isupper() else new
    return re.sub(r"[A-Za-z']+", swap, sentence)


def build_pirate(rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for question, english, _ in fact_pool(rng):
        assert english.endswith("."), english
        opener = rng.choice(PIRATE_OPENERS)
        # never repeat the opener's marker in the closer ("Arr! ... , arr!")
        closers = [c for c in PIRATE_CLOSERS if c == "." or
                   c.strip(" ,.!?").lower().split()[-1][:5] not in opener.lower()]
        rows.append((question, f"{opener} {pirateify(english)[:-1]}{rng.choice(closers)}"))
    return rows


def build_french(rng: random.Random) -> list[tuple[str, str]]:
    return [(question, french) for question, _, french in fact_pool(rng)]


# ---------------------------------------------------------------------------
# json_extract
# ---------------------------------------------------------------------------

NAMES = [
    "Priya Nair", "Tomás Herrera", "Aiko Tanaka", "Kwame Mensah", "Olga Petrova", "Liam O'Brien",
    "Fatima Benali", "Chen Wei", "Sofia Rossi", "Lars Johansson", "Amara Okafor", "Mateo García",
    "Hannah Schmidt", "Ravi Kumar", "Yuki Sato", "Emma Dubois", "Noah Williams", "Leila Haddad",
    "Diego Fernández", "Ingrid Larsen", "Kofi Boateng", "Mei Lin", "Arjun Mehta", "Isabella Costa",
    "Jonas Weber", "Zanele Dlamini", "Hiroshi Kato", "Nadia Popescu", "Oliver Bennett", "Ana Souza",
    "Mohammed Al-Sayed", "Clara Novak", "Samuel Adeyemi", "Elif Yilmaz", "Patrick Murphy", "Lucía Morales",
    "Min-jun Park", "Astrid Nilsson", "Tariq Hussain", "Grace Mwangi", "Pierre Lambert", "Ayesha Siddiqui",
    "Daniel Cohen", "Marta Kowalska", "Felipe Castro", "Nora Lindqvist", "Ibrahim Diallo", "Julia Becker",
    "Kenji Watanabe", "Rosa Jiménez", "Ethan Clarke", "Leena Virtanen", "Omar Farouk", "Chloé Martin",
    "Viktor Horvat", "Sara Ahmadi", "Benjamin Moreau", "Thandiwe Ndlovu", "Alejandro Ruiz", "Freya Campbell",
    "Dmitri Volkov", "Imani Johnson", "Luca Bianchi", "Anika Sharma", "Gabriel Silva", "Maya Goldberg",
    "Sven Eriksson", "Lina Nguyen", "Carlos Mendoza", "Hana Kim",
]
CITIES = [
    "Lyon", "Osaka", "Nairobi", "Toronto", "Melbourne", "São Paulo", "Kraków", "Accra", "Lisbon", "Seoul",
    "Manchester", "Bogotá", "Hamburg", "Mumbai", "Cape Town", "Vancouver", "Reykjavik", "Istanbul", "Dublin",
    "Marseille", "Auckland", "Chicago", "Valencia", "Hanoi", "Oslo", "Montreal", "Porto", "Dubai", "Edinburgh",
    "Lagos", "Kyoto", "Prague", "Austin", "Tunis", "Gothenburg", "Bangalore", "Santiago", "Helsinki", "Vienna",
    "Denver", "Seville", "Munich", "Perth", "Casablanca", "Zurich", "Quito", "Glasgow", "Tallinn", "Busan",
    "Bordeaux",
]
PERSON_TEMPLATES = [
    "{name}, {age}, moved to {city} last spring.",
    "{name} is {age} years old and lives in {city}.",
    "Living in {city}, {name} just turned {age}.",
    "At {age}, {name} opened a small bakery in {city}.",
    "{city} resident {name} ({age}) won the local chess tournament.",
    "Meet {name}: {age} years old, based in {city}.",
    "Our new teacher, {name}, is {age} and grew up in {city}.",
    "{name} celebrated turning {age} with friends in {city}.",
    "In {city}, a {age}-year-old named {name} rescued a stray cat.",
    "Customer record: {name} / {age} / {city}.",
    "{name} ({age}) cycles to work across {city} every day.",
    "The {age}-year-old architect {name} designed a new library in {city}.",
    "{name}, aged {age}, runs a café in {city}.",
    "Hi, I'm {name}, I'm {age} and I live in {city}.",
    "New sign-up: {name}, from {city}, age {age}.",
    "{city} welcomed {name}, {age}, as its new librarian.",
    "After years abroad, {name} returned to {city} at the age of {age}.",
    "Age {age}. Lives in {city}. Name: {name}.",
    "{name} has lived in {city} since childhood and is now {age}.",
    "Nurse {name}, {age}, just transferred to a hospital in {city}.",
    "Yesterday {name}, {age}, finished the {city} marathon.",
]
JSON_INSTRUCTION = "Extract name, age and city as JSON:"


def build_json(rng: random.Random) -> list[tuple[str, str]]:
    rows, seen = [], set()
    while len(rows) < TOTAL["json_extract"]:
        template = PERSON_TEMPLATES[len(rows) % len(PERSON_TEMPLATES)]
        name, city, age = rng.choice(NAMES), rng.choice(CITIES), rng.randint(21, 78)
        if (name, city) in seen:
            continue
        seen.add((name, city))
        prompt = f"{JSON_INSTRUCTION} {template.format(name=name, age=age, city=city)}"
        answer = json.dumps({"name": name, "age": age, "city": city}, ensure_ascii=False)
        rows.append((prompt, answer))
    return rows


# ---------------------------------------------------------------------------
# sentiment
# ---------------------------------------------------------------------------

REVIEW_GROUPS = [  # (subjects, positive predicates, negative predicates, positive closers, negative closers)
    (["This blender", "The kettle", "The phone charger", "This desk lamp", "The vacuum cleaner",
      "This coffee grinder", "The electric toothbrush", "This wireless mouse", "The air fryer",
      "This bluetooth speaker", "The hair dryer", "This alarm clock"],
     ["works perfectly and feels really sturdy", "arrived early and does exactly what I needed",
      "is worth every penny", "has held up great after months of daily use",
      "was easy to set up and works like a charm", "beats the expensive one I had before",
      "is simple, quiet and reliable"],
     ["broke after two days", "stopped working within a week", "feels cheap and flimsy",
      "arrived scratched and missing parts", "is a pain to use and hard to clean",
      "died right after the return window closed", "looks nothing like the photos"],
     ["Highly recommend.", "Would buy again.", "Five stars from me.", "Very happy with it."],
     ["Total waste of money.", "Would not recommend.", "I'm returning it.", "One star."]),
    (["The film", "This movie", "The sequel", "This blockbuster", "The remake",
      "The director's latest film", "This new release", "The adaptation"],
     ["kept me hooked from start to finish", "had brilliant acting and a clever plot",
      "was funny, warm and beautifully shot", "left the whole audience cheering",
      "exceeded every expectation I had", "was moving and wonderfully acted",
      "has a soundtrack I still can't stop humming"],
     ["was slow and painfully boring", "had a plot full of holes", "felt twice as long as it was",
      "wasted a great cast on a lazy script", "had me checking my watch the whole time",
      "was loud, messy and forgettable", "was a complete letdown"],
     ["A must-see.", "I'd watch it again tomorrow.", "Go see it.", "Easily the best film this year."],
     ["Skip it.", "I want my two hours back.", "Not worth the ticket.", "I nearly walked out."]),
    (["The pasta", "The soup", "The burger", "The curry", "The pizza", "The ramen", "The steak",
      "The risotto", "The chocolate cake"],
     ["was fresh and full of flavour", "tasted amazing", "was cooked to perfection",
      "was the best I've had in years", "came out hot and generously portioned"],
     ["was cold and bland", "was greasy and overcooked", "tasted like it had been microwaved",
      "was tiny and ridiculously overpriced", "came out lukewarm after a forty-minute wait"],
     ["We'll definitely be back.", "Highly recommended.", "Can't wait to return."],
     ["Never again.", "We won't be back.", "Avoid."]),
    (["This restaurant", "The café on the corner", "This little bistro", "The new sushi bar",
      "This diner", "The pizzeria downtown"],
     ["has friendly staff and quick service", "felt cosy and welcoming",
      "made our anniversary dinner special", "is my new favourite spot in town"],
     ["kept us waiting over an hour for a table", "was dirty and far too noisy",
      "got our order wrong twice", "had rude staff and sticky tables"],
     ["We'll definitely be back.", "Highly recommended.", "Can't wait to return."],
     ["Never again.", "We won't be back.", "Avoid."]),
]
CONTRAST = {"positive": ["I was skeptical at first, but ", "Despite the mixed reviews, "],
            "negative": ["I had high hopes, but ", "Despite the hype, "]}
SENTIMENT_INSTRUCTION = "Label the sentiment (positive or negative):"


def make_review(rng: random.Random, label: str, group_index: int) -> str:
    subjects, pos, neg, pos_end, neg_end = REVIEW_GROUPS[group_index % len(REVIEW_GROUPS)]
    subject = rng.choice(subjects)
    predicate = rng.choice(pos if label == "positive" else neg)
    if rng.random() < 0.25:
        subject = rng.choice(CONTRAST[label]) + subject[0].lower() + subject[1:]
    review = f"{subject} {predicate}."
    if rng.random() < 0.6:
        review += " " + rng.choice(pos_end if label == "positive" else neg_end)
    return review


def build_sentiment(rng: random.Random) -> tuple[list, list]:
    per_label = TOTAL["sentiment"] // 2
    held_per_label = HELDOUT["sentiment"] // 2
    train, heldout = [], []
    for label in ("positive", "negative"):
        reviews: list[str] = []
        while len(reviews) < per_label:
            review = make_review(rng, label, len(reviews))
            if review not in reviews:
                reviews.append(review)
        rows = [(f"{SENTIMENT_INSTRUCTION} {review}", label) for review in reviews]
        rng.shuffle(rows)
        heldout += rows[:held_per_label]
        train += rows[held_per_label:]
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


# ---------------------------------------------------------------------------


def split(rng: random.Random, rows: list, n_heldout: int) -> tuple[list, list]:
    rows = list(rows)
    rng.shuffle(rows)
    return rows[n_heldout:], rows[:n_heldout]


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for user, assistant in rows:
            record = {"messages": [{"role": "user", "content": user},
                                   {"role": "assistant", "content": assistant}]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main() -> None:
    builders = {"pirate": build_pirate, "french": build_french, "json_extract": build_json}
    for offset, task in enumerate(["pirate", "french", "json_extract", "sentiment"]):
        rng = random.Random(SEED + offset)
        if task == "sentiment":
            train, heldout = build_sentiment(rng)
        else:
            train, heldout = split(rng, builders[task](rng), HELDOUT[task])
        prompts = [user for user, _ in train + heldout]
        assert len(prompts) == len(set(prompts)), f"{task}: duplicate prompts"
        write_jsonl(OUT_DIR / task / "train.jsonl", train)
        write_jsonl(OUT_DIR / task / "heldout.jsonl", heldout)
        longest = max(len(reply.split()) for _, reply in train + heldout)
        print(f"{task}: {len(train)} train, {len(heldout)} heldout, longest reply {longest} words")


if __name__ == "__main__":
    main()
