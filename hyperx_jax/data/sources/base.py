"""What every source reader shares: the example dicts, where each came from, bad-line errors.

Every reader returns a list of plain dicts, one per example:

  token tasks (POS, NER)  {"tokens": [str, ...], "tags": [str, ...], "where": str}
  sentence pairs (XNLI)   {"premise": str, "hypothesis": str, "label": str | int, "where": str}
  raw text (MLM)          {"text": str, "where": str}

`where` says where the example came from, as every message about it starts: `file:line` for
text files (the sentence's first line), `file: row N` for parquet (N counted from 0). Token
examples of CoNLL-U and IOB2 files also carry `lines`, the line of each word (`word_where`).

A format (`Format`) is one module of this package: the keys its source config needs, its
reader and, for the formats `predict` labels, a `Document` reader that writes the file back
with the predictions.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

from hyperx_jax.config.vocabulary import UPOS_TAGS
from hyperx_jax.errors import UserError

Example = dict[str, Any]
WHERE = "where"
LINES = "lines"


def word_where(example: Example, i: int) -> str:
  """Where word i of a token example is: `file:line: word i+1` (or `file: row N: word i+1`)."""
  if LINES in example:
    path = example[WHERE].rsplit(":", 1)[0]
    return f"{path}:{example[LINES][i]}: word {i + 1}"
  return f"{example.get(WHERE, '?')}: word {i + 1}"


# Google universal tagset (Petrov et al. 2012, as in older treebanks) -> UPOS; any tag

# outside UPOS after this map becomes X.
GOOGLE_UNIVERSAL_TO_UPOS = {"CONJ": "CCONJ", "PRT": "PART", "ONOM": "INTJ"}
TAG_MAPS = {"google_universal_to_upos": GOOGLE_UNIVERSAL_TO_UPOS}


class SourceError(UserError):
  """Bad or missing input data; the message names the file and line."""


# ---------------------------------------------------------------- files


STDIN = "-"  # a path that reads standard input (predict)


def read_lines(path: str | os.PathLike) -> list[str]:
  """All lines of a UTF-8 text file (or of standard input, path "-"); a missing or empty file
  is an error."""
  if str(path) == STDIN:
    lines = sys.stdin.read().splitlines()
    if not any(line.strip() for line in lines):
      raise SourceError("<stdin>: no input.")
    return lines
  path = Path(path).expanduser()
  if not path.is_file():
    raise SourceError(f"{path}: no such file.")
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not any(line.strip() for line in lines):
    raise SourceError(f"{path}: file is empty.")
  return lines


def blocks(lines: list[str]) -> Iterator[list[tuple[int, str]]]:
  """Blank-line separated blocks of (1-based line number, line)."""
  block: list[tuple[int, str]] = []
  for number, line in enumerate(lines, start=1):
    if line.strip():
      block.append((number, line))
    elif block:
      yield block
      block = []
  if block:
    yield block


def bad_line(path, number: int, line: str, expected: str) -> SourceError:
  return SourceError(f"{path}:{number}: expected {expected}, got {line!r}")


def json_row(path, number: int, line: str) -> Any:
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise bad_line(path, number, line, f"a JSON object ({e.msg})") from e


def resolve_tag_map(tag_map: str | Mapping[str, str] | None) -> Callable[[str], str] | None:
  """A tag-mapping function from a dict or a known name (see `TAG_MAPS`)."""
  if tag_map is None:
    return None
  if isinstance(tag_map, str):
    if tag_map not in TAG_MAPS:
      raise SourceError(f"Unknown tag_map {tag_map!r}; known: {sorted(TAG_MAPS)}")
    table = TAG_MAPS[tag_map]
    return lambda tag: (t if (t := table.get(tag, tag)) in UPOS_TAGS else "X")
  table = dict(tag_map)
  return lambda tag: table.get(tag, tag)


def apply_tag_map(examples: list[Example], tag_map) -> list[Example]:
  mapping = resolve_tag_map(tag_map)
  if mapping is None:
    return examples
  return [{**ex, "tags": [mapping(t) for t in ex["tags"]]} for ex in examples]


def need(source: Mapping, key: str):
  if source.get(key) is None:
    raise SourceError(f"Source {dict(source)} of type {source['type']!r} needs a {key!r}.")
  return source[key]


@dataclasses.dataclass
class Document:
  """A file to label: its examples (as the featurisers take them) and how to write it back.

  `render(predictions)` takes one prediction per example (token tasks: a list of tags, one per
  word; pair tasks: a label) and returns the output file's text.
  """

  examples: list[Example]
  render: Callable[[list[Any]], str]


@dataclasses.dataclass(frozen=True)
class Format:
  """A source format: the keys its config needs, how to read it, and (formats that predict
  writes back) how to read a file to label.

  `required`: keys that must be set; `one_of`: groups of keys of which one must be set;
  `path_keys`: keys naming local files or directories (checked to exist before any read);
  `options`: key -> allowed values; `kinds`: the task kinds it feeds as a source;
  `document_kinds`: the kinds of task whose predictions `read_document`'s files take;
  `suffixes`: the file extensions that name it."""

  name: str
  read: Callable[[Mapping], list[Example]]
  kinds: tuple[str, ...]
  required: tuple[str, ...] = ()
  one_of: tuple[tuple[str, ...], ...] = ()
  path_keys: tuple[str, ...] = ()
  options: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
  read_document: Optional[Callable[[str], Document]] = None
  document_kinds: tuple[str, ...] = ()
  suffixes: tuple[str, ...] = ()  # file extensions that name the format (predict)
  # Python modules the reader needs beyond the runtime dependencies, and the extra that
  # installs them (`pip install hyperx_jax[extra]`).
  modules: tuple[str, ...] = ()
  extra: Optional[str] = None
  extra_check: Optional[Callable[[Mapping, str], list[str]]] = None

  def check(self, source: Mapping, where: str) -> list[str]:
    """Problems of a source config of this format that need no disk: missing keys, options."""
    errors = [
        f"{where}.{key}: a {self.name} source needs {key!r}"
        for key in self.required
        if source.get(key) is None
    ]
    for group in self.one_of:
      if not any(source.get(k) is not None for k in group):
        errors.append(f"{where}: a {self.name} source needs one of {list(group)}")
    for key, allowed in self.options.items():
      if source.get(key) is not None and source[key] not in allowed:
        errors.append(f"{where}.{key}: {source[key]!r} is not one of {list(allowed)}")
    if self.extra_check is not None:
      errors += self.extra_check(source, where)
    missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
    if missing:
      errors.append(
          f"{where}.type: a {self.name} source needs {missing}, which are not "
          f"installed: pip install 'hyperx_jax[{self.extra}]'"
      )
    return errors

  def local_paths(self, source: Mapping) -> Iterator[tuple[str, str]]:
    """(key, path) of the local files the source names (globs left out)."""
    for key in self.path_keys:
      value = source.get(key)
      for i, v in enumerate(value if isinstance(value, (list, tuple)) else [value]):
        if isinstance(v, str) and not any(ch in v for ch in "*?["):
          yield (f"{key}[{i}]" if isinstance(value, (list, tuple)) else key), v
