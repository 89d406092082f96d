"""Plain text, one item per line: sentences for masked LM, or sentences to tag."""

from __future__ import annotations

import os

from hyperx_jax.config.vocabulary import MLM, TOKEN
from hyperx_jax.data.sources.base import WHERE, Document, Example, Format, need, read_lines


def read_text(path: str | os.PathLike) -> list[Example]:
  """Plain text, one sentence per line (blank lines skipped), as {"text"}."""
  return [
      {"text": line.strip(), WHERE: f"{path}:{n}"}
      for n, line in enumerate(read_lines(path), start=1)
      if line.strip()
  ]


def read_document(path: str) -> Document:
  """Sentences to tag, one per line, words split on whitespace; written back one line per
  input line as `word/TAG word/TAG ...`."""
  lines = read_lines(path)
  sentences = [line.split() for line in lines if line.strip()]

  def render(predictions: list[list[str]]) -> str:
    tagged = iter(
        " ".join(f"{w}/{t}" for w, t in zip(words, tags))
        for words, tags in zip(sentences, predictions)
    )
    return "\n".join(next(tagged) if line.strip() else "" for line in lines) + "\n"

  return Document([{"tokens": words} for words in sentences], render)


# As a source: masked-LM text. As a file to label: sentences of a token task.
FORMAT = Format(
    "text",
    lambda s: read_text(need(s, "path")),
    kinds=(MLM,),
    required=("path",),
    path_keys=("path",),
    read_document=read_document,
    suffixes=(".txt",),
    document_kinds=(TOKEN,),
)
