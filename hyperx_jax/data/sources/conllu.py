"""CoNLL-U: sentences of a treebank, one word per line, UPOS in the 4th column."""

from __future__ import annotations

import os

from hyperx_jax.config.vocabulary import TOKEN
from hyperx_jax.data.sources.base import (
    LINES,
    WHERE,
    Document,
    Example,
    Format,
    SourceError,
    bad_line,
    blocks,
    need,
    read_lines,
)

CONLLU_COLUMNS = 10
UPOS_COLUMN = 3


def _conllu_id(path, number: int, line: str, token_id: str) -> tuple[int, int | None, str]:
  """(first, last, kind) of a CoNLL-U ID: a word `3`, a multiword range `3-4`, an empty node `3.1`."""
  if "-" in token_id or "." in token_id:
    kind = "range" if "-" in token_id else "empty"
    lo, _, hi = token_id.replace(".", "-").partition("-")
    if not (lo.isdigit() and hi.isdigit()):
      raise bad_line(path, number, line, "an ID like 3, 3-4 or 3.1")
    return int(lo), int(hi), kind
  if not token_id.isdigit():
    raise bad_line(path, number, line, "an integer word ID in column 1")
  return int(token_id), None, "word"


def _conllu_sentence(path, block: list[tuple[int, str]]) -> Example | None:
  """{"tokens", "tags", "where"} of one sentence; word IDs must run 1, 2, 3, ...; a range
  `a-b` must start at the next word and cover words that follow; an empty node `k.m` must
  follow word k."""
  tokens, tags, lines, range_end = [], [], [], (0, 0)
  for number, line in block:
    if line.startswith("#"):
      continue
    cols = line.split("\t")
    if len(cols) != CONLLU_COLUMNS:
      raise bad_line(
          path, number, line, f"{CONLLU_COLUMNS} tab-separated columns (found {len(cols)})"
      )
    expected = len(tokens) + 1
    lo, hi, kind = _conllu_id(path, number, line, cols[0])
    if kind == "range":
      if lo != expected or hi <= lo:
        raise bad_line(
            path,
            number,
            line,
            f"a multiword range starting at word {expected} (like {expected}-{expected + 1})",
        )
      range_end = (hi, number)
      continue
    if kind == "empty":
      if lo != expected - 1:
        raise bad_line(
            path,
            number,
            line,
            f"an empty node after word {expected - 1} (like {expected - 1}.1)",
        )
      continue
    if lo != expected:
      raise bad_line(
          path, number, line, f"word ID {expected} (IDs run 1, 2, 3, ... in each sentence)"
      )
    if not cols[1] or not cols[UPOS_COLUMN]:
      raise bad_line(path, number, line, "a FORM and a UPOS")
    lines.append(number)
    tokens.append(cols[1])
    tags.append(cols[UPOS_COLUMN])
  if range_end[0] > len(tokens):
    raise SourceError(
        f"{path}:{range_end[1]}: multiword range ends at word {range_end[0]} but "
        f"the sentence has {len(tokens)} words"
    )
  if not tokens:
    return None
  return {"tokens": tokens, "tags": tags, WHERE: f"{path}:{lines[0]}", LINES: lines}


def read_conllu(path: str | os.PathLike) -> list[Example]:
  """Sentences of a CoNLL-U file as {"tokens", "tags"} (UPOS column).

  Multi-word token lines (`1-2`) and empty nodes (`1.1`) are skipped; the syntactic words
  they cover are kept.
  """
  sentences = (_conllu_sentence(path, block) for block in blocks(read_lines(path)))
  return [s for s in sentences if s is not None]


def read_document(path: str) -> Document:
  """A CoNLL-U file to tag; written back with each word line's UPOS column (4th) replaced by
  the prediction (comments, multi-word ranges and empty nodes kept as they are)."""
  lines = read_lines(path)
  examples = read_conllu(path)  # checks every line; each word knows its line

  def render(predictions: list[list[str]]) -> str:
    out = list(lines)
    for example, tags in zip(examples, predictions):
      for number, tag in zip(example[LINES], tags):
        cols = out[number - 1].split("\t")
        cols[UPOS_COLUMN] = tag
        out[number - 1] = "\t".join(cols)
    return "\n".join(out) + "\n"

  return Document(examples, render)


FORMAT = Format(
    "conllu",
    lambda s: read_conllu(need(s, "path")),
    kinds=(TOKEN,),
    required=("path",),
    path_keys=("path",),
    read_document=read_document,
    suffixes=(".conllu",),
    document_kinds=(TOKEN,),
)
