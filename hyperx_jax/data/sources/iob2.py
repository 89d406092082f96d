"""IOB2: two columns, a token and its tag, a blank line between sentences (PAN-X, WikiANN)."""

from __future__ import annotations

import logging
import os

from hyperx_jax.config.vocabulary import IOB2_MODES, TOKEN
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
    word_where,
)


def _separator(lines: list[str]) -> tuple[str, int]:
  """The file's column separator (a tab, else spaces) and the line that set it."""
  number, line = next((n, l) for n, l in enumerate(lines, start=1) if l.strip())
  return ("\t" if "\t" in line else " "), number


def _iob2_pair(path, number: int, line: str, separator: tuple[str, int]) -> tuple[str, str]:
  sep, first = separator
  mixed = ("\t" in line) != (sep == "\t")
  cols = line.split("\t") if sep == "\t" else line.split()
  if mixed or len(cols) != 2 or not cols[0] or not cols[1]:
    name = "a tab" if sep == "\t" else "spaces"
    raise bad_line(
        path,
        number,
        line,
        f"two columns: token and IOB2 tag, separated by {name} "
        f"as on line {first} (one separator per file)",
    )
  return cols[0], cols[1]


def repair_iob2(examples: list[Example], mode: str, what: str) -> list[Example]:
  """IOB2 starts every entity with B-X. An I-X after O, or after a tag of another type, is
  rewritten as B-X and counted (`mode='repair'`, logged) or refused (`mode='strict'`)."""
  if mode not in IOB2_MODES:
    raise SourceError(f"{what}: iob2={mode!r}; expected one of {list(IOB2_MODES)}")
  out, repaired, first = [], 0, None
  for ex in examples:
    tags, previous = list(ex["tags"]), "O"
    for i, tag in enumerate(tags):
      if isinstance(tag, str) and tag.startswith("I-") and previous[2:] != tag[2:]:
        if mode == "strict":
          raise SourceError(
              f"{word_where(ex, i)} {ex['tokens'][i]!r}: {tag} follows "
              f"{previous!r}; IOB2 begins an entity with B-{tag[2:]} "
              "(iob2='repair' rewrites it)"
          )
        tags[i] = "B-" + tag[2:]
        repaired += 1
        first = first or word_where(ex, i)
      previous = tags[i] if isinstance(tags[i], str) else "O"
    out.append({**ex, "tags": tags})
  if repaired:
    logging.warning(
        "%s: %d I-X tags that began an entity became B-X (iob2='repair'); first at %s",
        what,
        repaired,
        first,
    )
  return out


def strip_language_prefix(tokens: list[str]) -> list[str]:
  """Drops PAN-X's `lang:` prefix when every token of the sentence has the same one."""
  langs = {t.partition(":")[0] for t in tokens}
  lang = langs.pop() if len(langs) == 1 else ""
  if not (2 <= len(lang) <= 3 and lang.isalpha() and lang.islower()):
    return tokens
  if not all(len(t) > len(lang) + 1 and t[len(lang)] == ":" for t in tokens):
    return tokens
  return [t[len(lang) + 1 :] for t in tokens]


def read_iob2(path: str | os.PathLike, iob2: str = "repair") -> list[Example]:
  """Two-column token / IOB2-tag files, a blank line between sentences; the columns are
  separated by a tab or by spaces, the same in the whole file. An I-X that begins an entity
  is repaired or refused as `iob2` says (see `repair_iob2`).

  Tokens may carry a language prefix as in XTREME's PAN-X files (`tr:İstanbul`); it is
  removed when all tokens of a sentence carry the same one.
  """
  lines = read_lines(path)
  separator = _separator(lines)
  examples = []
  for block in blocks(lines):
    pairs = [_iob2_pair(path, n, line, separator) for n, line in block]
    examples.append(
        {
            "tokens": strip_language_prefix([p[0] for p in pairs]),
            "tags": [p[1] for p in pairs],
            WHERE: f"{path}:{block[0][0]}",
            LINES: [n for n, _ in block],
        }
    )
  return repair_iob2(examples, iob2, str(path))


def _word(path, number: int, line: str) -> str:
  """The word of a line to tag: a word, optionally followed by one tag column."""
  cols = line.split("\t") if "\t" in line else line.split()
  if len(cols) > 2 or not cols[0]:
    raise bad_line(path, number, line, "a word, optionally followed by one tag column")
  return cols[0]


def read_document(path: str) -> Document:
  """One word per line (a second column, e.g. gold tags, may be present), a blank line between
  sentences; written back as `word<TAB>predicted tag`, blank lines kept."""
  lines = read_lines(path)
  sentences = list(blocks(lines))
  examples = [
      {"tokens": strip_language_prefix([_word(path, n, line) for n, line in block])}
      for block in sentences
  ]

  def render(predictions: list[list[str]]) -> str:
    out = {}
    for block, tags in zip(sentences, predictions):
      for (number, line), tag in zip(block, tags):
        out[number] = f"{_word(path, number, line)}\t{tag}"
    return "\n".join(out.get(n, "") for n in range(1, len(lines) + 1)) + "\n"

  return Document(examples, render)


FORMAT = Format(
    "iob2",
    lambda s: read_iob2(need(s, "path"), s.get("iob2", "repair")),
    kinds=(TOKEN,),
    required=("path",),
    path_keys=("path",),
    options={"iob2": IOB2_MODES},
    read_document=read_document,
    suffixes=(".iob2", ".conll", ".tsv"),
    document_kinds=(TOKEN,),
)
