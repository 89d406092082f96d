"""Hugging Face hub datasets read from their parquet files (no `datasets` library): XTREME's
PAN-X and UD-POS, XNLI, MultiNLI; from the hub at a pinned revision or a local copy."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from hyperx_jax.config.vocabulary import HF_CLASS_LABELS, HF_NO_LABEL, IOB2_MODES, PAIR, TOKEN
from hyperx_jax.data.sources.base import WHERE, Example, Format, SourceError, need
from hyperx_jax.data.sources.iob2 import repair_iob2
from hyperx_jax.data.sources.jsonl import PAIR_FIELDS


def hub_pattern(config: str | None, split: str) -> str:
  """Where a split's parquet files sit in a hub dataset repository (and in a local copy):
  `<config>/<split>-*.parquet`, or `data/<split>-*.parquet` for a dataset without configs."""
  return f"{config or 'data'}/{split}-*.parquet"


def _hub_snapshot(repo: str, revision: str, pattern: str, cache_dir: str | None) -> Path:
  """The local folder holding `pattern`'s files of `repo` at `revision` (downloaded once into
  the Hugging Face cache; with HF_HUB_OFFLINE=1 only the cache is read)."""
  from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top

  try:
    return Path(
        snapshot_download(
            repo_id=repo,
            repo_type="dataset",
            revision=revision,
            allow_patterns=[pattern],
            cache_dir=cache_dir,
        )
    )
  except Exception as e:
    raise SourceError(
        f"hub dataset {repo}@{revision} ({pattern}): could not download: "
        f"{type(e).__name__}: {e}"
    ) from e


def parquet_files(source: Mapping) -> list[Path]:
  """The parquet files of an `hf_parquet` source: `path` (a file, or a local copy of the
  repository) or the hub's `repo` at a pinned `revision`; `files` overrides the pattern."""
  pattern = source.get("files") or hub_pattern(source.get("config"), source.get("split", "train"))
  if source.get("path") is not None:
    root = Path(source["path"]).expanduser()
    if root.is_file():
      return [root]
    where = str(root)
  else:
    repo, revision = need(source, "repo"), need(source, "revision")
    root = _hub_snapshot(repo, revision, pattern, source.get("cache_dir"))
    where = f"hub dataset {repo}@{revision} ({root})"
  files = sorted(root.glob(pattern))
  if not files:
    raise SourceError(f"{where}: no files match {pattern!r}.")
  return files


def _class_names(schema, column: str) -> tuple[str, ...]:
  """The names of a class-id column: from the file's `huggingface` metadata (the dataset's
  ClassLabel feature) when it has them, else schema.HF_CLASS_LABELS."""
  meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
  feature = meta.get("info", {}).get("features", {}).get(column)
  while isinstance(feature, dict):
    if "names" in feature:
      return tuple(feature["names"])
    feature = feature.get("feature")
  return HF_CLASS_LABELS[column]


def _check_column(file: Path, schema, column: str, kinds: tuple[str, ...], expected: str):
  """`column` holds values of one of `kinds` ('string', 'int'), in lists if `expected` says
  `list<...>`; else an error naming the file, the column and both types."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  is_kind = {
      "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
      "int": pa.types.is_integer,
  }
  t = schema.field(column).type
  if expected.startswith("list"):
    t = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else None
  if t is None or not any(is_kind[k](t) for k in kinds):
    raise SourceError(
        f"{file}: column {column!r} has type {schema.field(column).type}, expected {expected}."
    )


def _names_of(file: Path, row: int, column: str, values: list, names: tuple[str, ...]) -> list:
  """Class ids -> names (names pass through); an id outside `names` is an error."""
  out = []
  for v in values:
    if isinstance(v, str):
      out.append(v)
    elif 0 <= v < len(names):
      out.append(names[v])
    else:
      raise SourceError(
          f"{file}: row {row}: {column} id {v} is outside the {len(names)} "
          f"classes {list(names)}."
      )
  return out


def _parquet_tokens(file: Path, schema, tag_column: str) -> list[Example]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  _check_column(file, schema, "tokens", ("string",), "list<string>")
  _check_column(file, schema, tag_column, ("int", "string"), "list<int64> class ids")
  names = _class_names(schema, tag_column)
  cols = pq.read_table(file, columns=["tokens", tag_column]).to_pydict()
  examples = []
  for i, (tokens, tags) in enumerate(zip(cols["tokens"], cols[tag_column])):
    if tokens is None or tags is None or None in tags:
      raise SourceError(f"{file}: row {i}: null tokens or {tag_column}.")
    examples.append(
        {
            "tokens": tokens,
            "tags": _names_of(file, i, tag_column, tags, names),
            WHERE: f"{file}: row {i}",
        }
    )
  return examples


def _parquet_pairs(file: Path, schema) -> list[Example]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  for column in ("premise", "hypothesis"):
    _check_column(file, schema, column, ("string",), "string")
  _check_column(file, schema, "label", ("int", "string"), "int64 class ids")
  names = _class_names(schema, "label")
  cols = pq.read_table(file, columns=list(PAIR_FIELDS)).to_pydict()
  examples, unlabelled = [], 0
  for i, (premise, hypothesis, label) in enumerate(zip(*(cols[k] for k in PAIR_FIELDS))):
    if premise is None or hypothesis is None or label is None:
      raise SourceError(f"{file}: row {i}: null premise, hypothesis or label.")
    if label == HF_NO_LABEL:
      unlabelled += 1
      continue
    examples.append(
        {
            "premise": premise,
            "hypothesis": hypothesis,
            "label": _names_of(file, i, "label", [label], names)[0],
            WHERE: f"{file}: row {i}",
        }
    )
  if unlabelled:
    logging.info("%s: skipped %d rows without a gold label (%d)", file, unlabelled, HF_NO_LABEL)
  return examples


def read_parquet(file: Path, iob2: str = "repair") -> list[Example]:
  """One hub parquet file, by its columns: `tokens` with `ner_tags` (IOB2, repaired or refused
  as `iob2` says) or `pos_tags`, or `premise`, `hypothesis`, `label`. Class ids become names."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  schema = pq.read_schema(file)
  columns = set(schema.names)
  if "tokens" in columns and "ner_tags" in columns:
    return repair_iob2(_parquet_tokens(file, schema, "ner_tags"), iob2, str(file))
  if "tokens" in columns and "pos_tags" in columns:
    return _parquet_tokens(file, schema, "pos_tags")
  if set(PAIR_FIELDS) <= columns:
    return _parquet_pairs(file, schema)
  raise SourceError(
      f"{file}: columns {sorted(columns)}; expected tokens + ner_tags (PAN-X), "
      "tokens + pos_tags (UD-POS) or premise + hypothesis + label (XNLI)."
  )


def read_hf_parquet(source: Mapping) -> list[Example]:
  """Every parquet file of an `hf_parquet` source, in file order (see `parquet_files`)."""
  return [
      ex
      for file in parquet_files(source)
      for ex in read_parquet(file, source.get("iob2", "repair"))
  ]


def _check_revision(source: Mapping, where: str) -> list[str]:
  """Without a local `path`, the hub's `repo` must come with a pinned `revision`."""
  if source.get("path") is not None or source.get("repo") is None or source.get("revision"):
    return []
  return [
      f"{where}.revision: an hf_parquet source without a local path needs a pinned "
      "revision (a commit sha or a tag)"
  ]


FORMAT = Format(
    "hf_parquet",
    read_hf_parquet,
    kinds=(PAIR, TOKEN),
    one_of=(("path", "repo"),),
    path_keys=("path",),
    options={"iob2": IOB2_MODES},
    extra_check=_check_revision,
)
