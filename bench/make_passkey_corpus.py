#!/usr/bin/env python3
"""Writes a byte-level training corpus that teaches a small model to use its whole context: book passages
with a passkey hidden at a random depth and asked for at the end, mixed with plain book passages.

The prompt template is the one `nats eval --task passkey` asks (runtime/passkey.h); keep them equal.

usage: bench/make_passkey_corpus.py --books .cache/books/raw --out DIR [--docs 12000] [--max_chars 512]
         [--min_filler 16] [--plain_fraction 0.4] [--repeat_fraction 0]
  DIR/train.jsonl      {"text": ...} documents: passkey samples and plain passages, shuffled
  DIR/heldout.txt      the last 10% of every book, never in train.jsonl: filler for evaluation
"""
import argparse
import json
import os
import random
import re

KEY_SENTENCE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}."


def read_books(folder):
    texts = []
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".txt")):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", errors="ignore")
        text = re.sub(r"\s+", " ", raw).strip()
        text = "".join(c for c in text if ord(c) < 128)  # byte-level model: keep it ASCII
        if len(text) > 10000:
            texts.append((name, text))
    return texts


def passage(rng, text, n):
    start = rng.randrange(0, len(text) - n - 1)
    # begin after a space so passages start on a word
    space = text.find(" ", start)
    start = space + 1 if 0 <= space < start + 40 else start
    return text[start:start + n]


def passkey_sample(rng, text, filler_chars):
    key = str(rng.randrange(10000, 100000))
    filler = passage(rng, text, filler_chars)
    depth = rng.random()
    cut = int(depth * len(filler))
    space = filler.rfind(" ", 0, cut + 1)
    cut = space if space > 0 else cut
    return filler[:cut] + KEY_SENTENCE.format(key=key) + filler[cut:] + QUESTION + ANSWER.format(key=key)


def repeat_sample(rng, text):
    """A stretch of text said twice: half of it can only be predicted by copying from the first time, so a small
    model forms the copying (induction) heads that passkey retrieval needs far sooner than from the few answer
    bytes of passkey samples alone. Half the stretches are lists of 5-digit numbers, the passkey's own alphabet."""
    if rng.random() < 0.5:
        body = " ".join(str(rng.randrange(10000, 100000)) for _ in range(rng.randrange(3, 16)))
    else:
        body = passage(rng, text, rng.randrange(20, 120)).strip()
    return f" Say it once: {body}. Say it again: {body}."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", default=".cache/books/raw")
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", type=int, default=12000, help="passkey samples")
    ap.add_argument("--plain_fraction", type=float, default=0.4, help="share of plain passages among documents")
    ap.add_argument("--max_chars", type=int, default=512, help="longest document (bytes)")
    ap.add_argument("--min_filler", type=int, default=16,
                    help="shortest filler (bytes); a curriculum starts with short fillers (the key a few dozen "
                         "bytes back) and lengthens them phase by phase")
    ap.add_argument("--repeat_fraction", type=float, default=0,
                    help="share of documents that say a stretch of text twice (see repeat_sample)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    for name in ("plain_fraction", "repeat_fraction"):
        if not 0 <= getattr(args, name) < 1:
            raise SystemExit(f"--{name} {getattr(args, name)}: want a share in [0, 1) of the documents")
    if args.plain_fraction + args.repeat_fraction >= 1:
        raise SystemExit(f"--plain_fraction {args.plain_fraction} + --repeat_fraction {args.repeat_fraction} "
                         "leave no share for the passkey samples: want a sum below 1")
    rng = random.Random(args.seed)
    books = read_books(args.books)
    os.makedirs(args.out, exist_ok=True)
    train, heldout = [], []
    for name, text in books:
        split = int(0.9 * len(text))
        train.append(text[:split])
        heldout.append(text[split:])
    overhead = len(KEY_SENTENCE.format(key="00000")) + len(QUESTION) + len(ANSWER.format(key="00000"))
    if args.max_chars - overhead <= args.min_filler:
        raise SystemExit(f"--max_chars {args.max_chars} leaves no filler longer than --min_filler "
                         f"{args.min_filler}: the key sentence, question and answer take {overhead} bytes")
    docs = []
    for _ in range(args.docs):
        text = rng.choice(train)
        filler = rng.randrange(args.min_filler, args.max_chars - overhead)
        docs.append(passkey_sample(rng, text, filler))
    # Shares of all documents: the --docs passkey samples are the rest.
    all_docs = args.docs / (1 - args.plain_fraction - args.repeat_fraction)
    plain = int(all_docs * args.plain_fraction)
    for _ in range(plain):
        docs.append(passage(rng, rng.choice(train), args.max_chars))
    repeats = int(all_docs * args.repeat_fraction)
    for _ in range(repeats):
        docs.append(repeat_sample(rng, rng.choice(train)))
    rng.shuffle(docs)
    with open(os.path.join(args.out, "train.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    with open(os.path.join(args.out, "heldout.txt"), "w") as f:
        f.write("\n".join(heldout) + "\n")
    total = sum(len(d) for d in docs)
    print(f"{len(docs)} documents ({args.docs} passkey, {plain} plain, {repeats} repeats), {total} bytes -> "
          f"{args.out}/train.jsonl; held-out filler {sum(len(h) for h in heldout)} bytes -> {args.out}/heldout.txt")


if __name__ == "__main__":
    main()
