"""Small parquet files shaped like the Hugging Face hub datasets the configs read.

Column names, types and label encodings are those of the datasets' cards (dataset_info):
  google/xtreme PAN-X.<lang>  tokens list<string>, ner_tags list<int64>, langs list<string>
  google/xtreme udpos.<Lang>  tokens list<string>, pos_tags list<int64>
  facebook/xnli <lang>        premise string, hypothesis string, label int64
  nyu-mll/multi_nli           promptID int32, pairID string, premise (+ _binary_parse, _parse),
                              hypothesis (+ _binary_parse, _parse), genre string, label int64
in the repositories' layout (`<config>/<split>-00000-of-00001.parquet`, `data/<split>-...`).
The label names are written out here as the cards list them, independently of vocabulary.py.
"""

from __future__ import annotations

import json
import pathlib
import random

import pyarrow as pa
import pyarrow.parquet as pq

PANX_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
UDPOS_NAMES = [
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
]
NLI_NAMES = ["entailment", "neutral", "contradiction"]

STRINGS = pa.list_(pa.string())
IDS = pa.list_(pa.int64())


def write_parquet(path: pathlib.Path, columns: dict, types: dict, metadata: dict | None = None):
  table = pa.table({k: pa.array(v, type=types[k]) for k, v in columns.items()})
  if metadata is not None:
    table = table.replace_schema_metadata({b"huggingface": json.dumps(metadata).encode()})
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, path)
  return path


def split_file(root: pathlib.Path, config: str, split: str) -> pathlib.Path:
  return root / config / f"{split}-00000-of-00001.parquet"


def _words(rng: random.Random, n: int) -> list[str]:
  return [f"w{rng.randrange(4, 90)}" for _ in range(n)]


def ner_rows(rng: random.Random, n: int, lang: str) -> dict[str, list]:
  """Sentences with valid IOB2 tag ids: entities of 1-2 words, B- then I- of one type."""
  tokens, tags = [], []
  for _ in range(n):
    words, ids = _words(rng, rng.randint(3, 7)), []
    while len(ids) < len(words):
      kind = rng.choice((0, 1, 3, 5))  # O, B-PER, B-ORG, B-LOC
      ids.append(kind)
      if kind and len(ids) < len(words) and rng.random() < 0.5:
        ids.append(kind + 1)  # the matching I-
    tokens.append(words)
    tags.append(ids)
  return {"tokens": tokens, "ner_tags": tags, "langs": [[lang] * len(t) for t in tokens]}


def write_panx(root: pathlib.Path, lang: str, split: str, n: int, seed: int = 0) -> dict:
  rows = ner_rows(random.Random(seed), n, lang)
  write_parquet(
      split_file(root, f"PAN-X.{lang}", split),
      rows,
      {"tokens": STRINGS, "ner_tags": IDS, "langs": STRINGS},
  )
  return rows


def write_udpos(root: pathlib.Path, language: str, split: str, n: int, seed: int = 0) -> dict:
  rng = random.Random(seed)
  tokens = [_words(rng, rng.randint(3, 7)) for _ in range(n)]
  rows = {"tokens": tokens, "pos_tags": [[rng.randrange(17) for _ in t] for t in tokens]}
  write_parquet(
      split_file(root, f"udpos.{language}", split), rows, {"tokens": STRINGS, "pos_tags": IDS}
  )
  return rows


def pair_rows(rng: random.Random, n: int) -> dict[str, list]:
  return {
      "premise": [" ".join(_words(rng, 5)) for _ in range(n)],
      "hypothesis": [" ".join(_words(rng, 4)) for _ in range(n)],
      "label": [rng.randrange(3) for _ in range(n)],
  }


def write_xnli(root: pathlib.Path, lang: str, split: str, n: int, seed: int = 0) -> dict:
  rows = pair_rows(random.Random(seed), n)
  write_parquet(
      split_file(root, lang, split),
      rows,
      {"premise": pa.string(), "hypothesis": pa.string(), "label": pa.int64()},
  )
  return rows


def write_multi_nli(root: pathlib.Path, split: str, n: int, seed: int = 0) -> dict:
  rng = random.Random(seed)
  rows = pair_rows(rng, n)
  text = {
      k: [""] * n
      for k in (
          "premise_binary_parse",
          "premise_parse",
          "hypothesis_binary_parse",
          "hypothesis_parse",
      )
  }
  full = {
      "promptID": list(range(n)),
      "pairID": [f"{i}e" for i in range(n)],
      **rows,
      **text,
      "genre": ["fiction"] * n,
  }
  types = {k: pa.string() for k in full}
  types.update(promptID=pa.int32(), label=pa.int64())
  write_parquet(split_file(root, "data", split), full, types)
  return rows
