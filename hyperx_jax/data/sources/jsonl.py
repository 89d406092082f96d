"""JSON lines of sentence pairs (XNLI-shaped: premise, hypothesis, label)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from hyperx_jax.config.vocabulary import PAIR, TOKEN
from hyperx_jax.data.sources.base import (
    WHERE,
    Document,
    Example,
    Format,
    bad_line,
    json_row,
    need,
    read_lines,
)

PAIR_FIELDS = ("premise", "hypothesis", "label")
# The field names of the official MultiNLI / XNLI JSON lines files, read as PAIR_FIELDS.
NLI_FIELDS = ("sentence1", "sentence2", "gold_label")
NO_GOLD_LABEL = "-"  # MultiNLI: annotators reached no consensus (the row is skipped)


def read_jsonl_pairs(
    path: str | os.PathLike, fields: Mapping[str, str] | None = None, language: str | None = None
) -> list[Example]:
  """JSON lines of sentence pairs; the label is a name or an int id.

  Field names: `fields` maps premise / hypothesis / label to the file's names; without it a
  file whose first row has "premise" is read as PAIR_FIELDS and one with "sentence1" as the
  official MultiNLI / XNLI names (NLI_FIELDS). `language` keeps the rows whose "language" is
  that (the official XNLI files hold every language). Rows labelled "-" are skipped, counted.
  """
  rows = [
      (n, line, json_row(path, n, line))
      for n, line in enumerate(read_lines(path), start=1)
      if line.strip()
  ]
  if fields is not None:
    names = tuple(fields[k] for k in PAIR_FIELDS)
  else:
    first = rows[0][2]
    names = NLI_FIELDS if isinstance(first, dict) and "sentence1" in first else PAIR_FIELDS
  examples, unlabelled = [], 0
  for number, line, row in rows:
    if not isinstance(row, dict) or not all(k in row for k in names):
      raise bad_line(
          path,
          number,
          line,
          f"an object with keys {list(names)} (the source's "
          '"fields" maps premise / hypothesis / label to other names)',
      )
    if language is not None and row.get("language") != language:
      continue
    premise, hypothesis, label = (row[k] for k in names)
    if label == NO_GOLD_LABEL:
      unlabelled += 1
      continue
    if not isinstance(label, (str, int)) or isinstance(label, bool):
      raise bad_line(path, number, line, "a label that is a name or an int")
    examples.append(
        {"premise": premise, "hypothesis": hypothesis, "label": label, WHERE: f"{path}:{number}"}
    )
  if unlabelled:
    logging.info("%s: skipped %d rows without a gold label (%r)", path, unlabelled, NO_GOLD_LABEL)
  return examples


def _record(path: str, number: int, line: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """(the row as read, the example to label) of one line of a file to label: a pair
  ("premise" and "hypothesis", or "sentence1" and "sentence2"), or a sentence to tag ("tokens":
  a list of words, or "text": split on whitespace); an optional "lang" names its language."""
  row = json_row(path, number, line)
  lang = row.get("lang") if isinstance(row, dict) else None
  if lang is not None and not isinstance(lang, str):
    raise bad_line(path, number, line, 'a string "lang"')
  extra = {} if lang is None else {"lang": lang}
  if isinstance(row, dict):
    for a, b in (PAIR_FIELDS[:2], NLI_FIELDS[:2]):
      if isinstance(row.get(a), str) and isinstance(row.get(b), str):
        return row, {"premise": row[a], "hypothesis": row[b], **extra}
    tokens = row.get("tokens")
    if isinstance(tokens, list) and tokens and all(isinstance(t, str) and t for t in tokens):
      return row, {"tokens": tokens, **extra}
    if isinstance(row.get("text"), str) and row["text"].split():
      return row, {"tokens": row["text"].split(), **extra}
  names = " or ".join(f'"{a}" and "{b}"' for a, b in (PAIR_FIELDS[:2], NLI_FIELDS[:2]))
  raise bad_line(
      path,
      number,
      line,
      f'an object with string fields {names} (pairs), or "tokens" (a list '
      'of words) or "text" (words to tag), and optionally "lang"',
  )


def read_document(path: str) -> Document:
  """One object per line (`_record`): pairs to classify or sentences to tag, each optionally
  with its "lang"; written back as the same objects plus the prediction's fields."""
  rows = [
      _record(path, n, line) for n, line in enumerate(read_lines(path), start=1) if line.strip()
  ]

  def render(predictions: list[Any]) -> str:
    return "".join(
        json.dumps({**row, **(p if isinstance(p, dict) else {"prediction": p})}, ensure_ascii=False)
        + "\n"
        for (row, _), p in zip(rows, predictions)
    )

  return Document([example for _, example in rows], render)


FORMAT = Format(
    "jsonl",
    lambda s: read_jsonl_pairs(need(s, "path"), s.get("fields"), s.get("language")),
    kinds=(PAIR,),
    required=("path",),
    path_keys=("path",),
    read_document=read_document,
    suffixes=(".jsonl",),
    document_kinds=(PAIR, TOKEN),
)
