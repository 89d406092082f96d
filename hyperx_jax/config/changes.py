"""Which config fields may differ, and where two configs differ.

Two lists, both read off the fields' declarations (`fields.field`), so a field's policy is
written where the field is:

- `RESUMABLE_CHANGES`: fields a run may change when it continues in its workdir (how long and
  how often it trains, logs, evaluates and saves, which kernel computes attention; never what a
  step computes);
- `COLUMN_IGNORES`: fields the runs of one `compare` column may differ in (the seed, and what
  changes no result);

and `HYPERNETWORK_ONLY_FIELDS`, the fields only Hyper-X reads, which both lists gain for the
other methods (`for_method`).

A field that a saved config lacks (added since) is no change while the new config keeps it at
its default: the behaviour the run was trained with.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterator, Mapping, Sequence

from hyperx_jax.config.fields import (
    COMPARE_IGNORES,
    HYPERNETWORK_ONLY,
    RESUMABLE,
    Section,
    default_of,
    hints,
)
from hyperx_jax.config.sections import StreamSpec, TaskSpec
from hyperx_jax.config.spec import RunSpec

ABSENT = "<absent>"  # a config field that one of two configs lacks
# Config keys whose value is a list (or mapping) of entries of one section.
ENTRIES = {"train_streams": StreamSpec, "eval_streams": StreamSpec, "tasks": TaskSpec}


def _fields(section: type = RunSpec, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
  """('data.temperature', field) for every declared field, nested sections walked."""
  for f in section.declared():
    path = f"{prefix}{f.name}"
    hint = hints(section)[f.name]
    if isinstance(hint, type) and issubclass(hint, Section):
      yield from _fields(hint, f"{path}.")
    else:
      yield path, f


def fields_where(flag: str) -> tuple[str, ...]:
  """Paths of the fields with `flag`; a list entry's field as 'train_streams[].sample_seed'."""
  entries = tuple(
      f"{name}[].{f.name}"
      for name, spec in ENTRIES.items()
      for f in spec.declared()
      if f.metadata.get(flag)
  )
  return tuple(path for path, f in _fields() if f.metadata.get(flag)) + entries


def entry_path(path: str) -> str:
  """'train_streams[2].sample_seed' -> 'train_streams[].sample_seed'."""
  return re.sub(r"\[\d+\]", "[]", path)


def field_path(path: str) -> str:
  """The field a leaf belongs to: 'hyperx.typology_features[1]' -> 'hyperx.typology_features'
  (a list-valued field's items are leaves of their own)."""
  return re.sub(r"(\[\d+\])+$", "", path)


RESUMABLE_CHANGES = fields_where(RESUMABLE)
COLUMN_IGNORES = fields_where(COMPARE_IGNORES)
HYPERNETWORK_ONLY_FIELDS = fields_where(HYPERNETWORK_ONLY)


def for_method(allowed: tuple[str, ...], *configs: Mapping[str, Any]) -> tuple[str, ...]:
  """`allowed`, plus the hypernetwork's own fields where no config is a Hyper-X run."""
  if any(c.get("method", "hyperx") == "hyperx" for c in configs):
    return allowed
  return allowed + HYPERNETWORK_ONLY_FIELDS


def config_leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'checkpoint.keep': 3, 'train_streams[0].lang': 'en', ...} of a JSON-like tree."""
  if isinstance(tree, Mapping):
    items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in tree.items()]
  elif isinstance(tree, list):
    items = [(f"{prefix}[{i}]", v) for i, v in enumerate(tree)]
  else:
    return {prefix: tree}
  return {path: leaf for key, value in items for path, leaf in config_leaves(value, key).items()}


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
  """field -> (saved value, new value) for every leaf that differs (ABSENT if missing)."""
  a, b = config_leaves(saved), config_leaves(new)
  return {
      k: (a.get(k, ABSENT), b.get(k, ABSENT))
      for k in sorted(set(a) | set(b))
      if a.get(k, ABSENT) != b.get(k, ABSENT)
  }


def _json(value: Any) -> Any:
  return json.loads(json.dumps(value))


def default_at(path: str) -> Any:
  """The default of the field at a config path ('data.packing', 'eval_streams[2].role',
  'tasks.ner.pooling'), in its JSON form; ABSENT when no declared field is there."""
  keys = re.findall(r"[^.\[\]]+", path)
  if keys and keys[0] in ENTRIES:
    section = ENTRIES[keys[0]]
    rest = keys[2:] if keys[0] == "tasks" or (len(keys) > 1 and keys[1].isdigit()) else keys[1:]
    if keys[0] == "eval_streams" and rest == ["role"]:
      return StreamSpec.EVAL_ROLE
    known = {f.name: f for f in section.declared()}
    return _json(default_of(known[rest[0]])) if len(rest) == 1 and rest[0] in known else ABSENT
  known = dict(_fields())
  dotted = ".".join(keys)
  return _json(default_of(known[dotted])) if dotted in known else ABSENT


def changes_beyond(
    a: Mapping[str, Any], b: Mapping[str, Any], allowed: Sequence[str]
) -> dict[str, tuple]:
  """The differences between two configs (JSON form) outside `allowed`, where a field one of
  them lacks (a config saved before the field existed) counts only when the other moves it off
  its default."""
  return {
      k: v
      for k, v in config_differences(a, b).items()
      if not {k, entry_path(k), field_path(k)} & set(allowed) and not _absent_means_other(k, v)
  }


def _absent_means_other(path: str, values: tuple) -> bool:
  """One side lacks the field and the other holds its default."""
  if ABSENT not in values:
    return False
  default = default_at(path)
  return default != ABSENT and default in values
