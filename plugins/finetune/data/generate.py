"""Generate the shipped task data: negation-aware review sentiment (NegSent).

Origin: written for gpuforge (no external source). Hand-written word lists and
sentence frames below; every sentence is a short review whose polarity is the
adjective's polarity, flipped by the frame's negation. Mean-pooled sentence
embeddings are known to be weak at negation ("good" vs "not good" embed close), so
a linear probe on frozen MiniLM embeddings leaves room that fine-tuning can close.

The held-out split uses subjects AND adjectives that never occur in training, so the
metric measures generalisation, not memorised words.

    python generate.py        # rewrites negsent_{train,test}.jsonl and negsim_{train,test}.jsonl
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS_TRAIN = ["movie", "food", "service", "hotel room", "book", "concert", "coffee", "staff", "hike", "lecture",
                  "pizza", "museum", "flight", "app", "game", "show", "soup", "album", "tour", "class"]
SUBJECTS_TEST = ["restaurant", "play", "novel", "laptop", "trip", "podcast", "burger", "festival"]
POS_TRAIN = ["good", "great", "excellent", "wonderful", "enjoyable", "delightful", "pleasant", "fantastic",
             "superb", "charming", "impressive", "lovely"]
NEG_TRAIN = ["bad", "terrible", "awful", "boring", "disappointing", "dreadful", "poor", "horrible", "dull",
             "unpleasant", "mediocre", "annoying"]
POS_TEST = ["brilliant", "marvelous", "satisfying", "amazing"]
NEG_TEST = ["miserable", "tedious", "lousy", "frustrating"]

# (frame, negated?): {s} subject, {a} adjective
FRAMES = [
    ("The {s} was {a}.", False),
    ("I thought the {s} was really {a}.", False),
    ("Honestly, the {s} was {a}.", False),
    ("Everyone agreed the {s} was {a}.", False),
    ("The {s} turned out to be {a}.", False),
    ("The {s} was not {a}.", True),
    ("The {s} wasn't {a} at all.", True),
    ("I would never call the {s} {a}.", True),
    ("Nobody thought the {s} was {a}.", True),
    ("The {s} was far from {a}.", True),
    ("The {s} was anything but {a}.", True),
    ("I did not find the {s} {a}.", True),
]


def sentences(subjects, pos, neg):
    out = []
    for s in subjects:
        for a, pol in [(a, 1) for a in pos] + [(a, 0) for a in neg]:
            for frame, negated in FRAMES:
                label = pol ^ int(negated)
                out.append({"text": frame.format(s=s, a=a), "label": ["negative", "positive"][label]})
    return out


def main(folder: Path = Path(__file__).parent, n_train: int = 480, n_test: int = 240, n_pairs_train: int = 400,
         n_pairs_test: int = 200) -> None:
    rng = random.Random(20261126)
    train_all = sentences(SUBJECTS_TRAIN, POS_TRAIN, NEG_TRAIN)
    test_all = sentences(SUBJECTS_TEST, POS_TEST, NEG_TEST)
    train = rng.sample(train_all, n_train)
    test = rng.sample(test_all, n_test)
    for name, rows in [("negsent_train.jsonl", train), ("negsent_test.jsonl", test)]:
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Similarity pairs: score 1.0 when both sentences carry the same sentiment, else 0.0.
    for name, pool, n in [("negsim_train.jsonl", train_all, n_pairs_train), ("negsim_test.jsonl", test_all, n_pairs_test)]:
        rows = []
        for _ in range(n):
            a, b = rng.sample(pool, 2)
            rows.append({"sentence1": a["text"], "sentence2": b["text"], "score": float(a["label"] == b["label"])})
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
