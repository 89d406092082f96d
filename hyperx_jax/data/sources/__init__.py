"""Data sources: one module per format, and the registry that the pipeline, the config checks
and `predict` ask.

    examples = sources.read_source({"type": "conllu", "path": "train.conllu"})

Each format module (`conllu`, `iob2`, `jsonl`, `text`, `mo`, `hf_parquet`, `tfds`) declares a
`FORMAT` (`base.Format`): the keys its source config needs, the files it names (checked to
exist before anything is read), its options, the task kinds it feeds, its reader (errors name
the file and line) and, for the formats `predict` writes back, its document reader. A source
config may also set `tag_map` (a dict, or a name of `TAG_MAPS`) and `max_examples`.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperx_jax.data.sources import conllu, hf_parquet, iob2, jsonl, mo, text, tfds
from hyperx_jax.data.sources.base import (
    LINES,
    TAG_MAPS,
    WHERE,
    Document,
    Example,
    Format,
    SourceError,
    apply_tag_map,
    bad_line,
    blocks,
    json_row,
    read_lines,
    resolve_tag_map,
    word_where,
)
from hyperx_jax.data.sources.conllu import UPOS_COLUMN, read_conllu
from hyperx_jax.data.sources.iob2 import read_iob2, repair_iob2, strip_language_prefix
from hyperx_jax.data.sources.jsonl import NLI_FIELDS, PAIR_FIELDS, read_jsonl_pairs
from hyperx_jax.data.sources.mo import LOCALE_DIR, mo_parallel, mo_sentences
from hyperx_jax.data.sources.text import read_text
from hyperx_jax.data.sources.tfds import UD_TREEBANKS, prepare_tfds, read_tfds

FORMATS: dict[str, Format] = {
    m.FORMAT.name: m.FORMAT for m in (conllu, iob2, jsonl, text, mo, hf_parquet, tfds)
}
SOURCE_TYPES = tuple(FORMATS)
# Formats that `predict` reads and writes back -> the task kinds they label.
DOCUMENT_FORMATS = {name: f.document_kinds for name, f in FORMATS.items() if f.read_document}
FORMAT_OF_SUFFIX = {suffix: name for name, f in FORMATS.items() for suffix in f.suffixes}


def format_of(source: Mapping) -> Format:
  kind = source.get("type")
  if kind not in FORMATS:
    raise SourceError(
        f"Unknown source type {kind!r} in {dict(source)}; known: {list(SOURCE_TYPES)}"
    )
  return FORMATS[kind]


def check_source(source: Mapping, where: str) -> list[str]:
  """Problems of a source config that need no disk: its type, its keys, its options."""
  if not isinstance(source, Mapping):
    return [f"{where}: expected a mapping with a 'type', got {source!r}"]
  if source.get("type") not in FORMATS:
    return [f"{where}.type: {source.get('type')!r} is not one of {list(SOURCE_TYPES)}"]
  errors = FORMATS[source["type"]].check(source, where)
  tag_map = source.get("tag_map")
  if isinstance(tag_map, str) and tag_map not in TAG_MAPS:
    errors.append(f"{where}.tag_map: {tag_map!r} is not one of {sorted(TAG_MAPS)} (or a dict)")
  return errors


def read_source(source: Mapping) -> list[Example]:
  """Raw examples of one source config, e.g. `{"type": "conllu", "path": ...}`: the format's
  reader, then `max_examples` and `tag_map`."""
  examples = format_of(source).read(source)
  if not examples:
    raise SourceError(f"Source {dict(source)} yielded no examples.")
  if source.get("max_examples") is not None:
    examples = examples[: source["max_examples"]]
  return apply_tag_map(examples, source.get("tag_map"))
