"""A config field, written once: its default, what it means, and whether it may change.

Every section of the config (`sections.py`) is a frozen dataclass whose fields are declared
with `field`:

    temperature: float = field(5.0, 'T of the sampling rate (n_i / N)^(1/T) of the streams')

The default is the one `common.get_config()` writes and the one an older saved config that
lacks the field decodes to; `doc` is its entry in the config reference (docs/config.md);
`resumable` marks a field a run may change when it continues in its workdir (how long and how
often, never what a step computes); `compare_ignores` a field that runs of one `compare` column
may differ in (the seed, and what changes no result); `hypernetwork_only` a field that only
Hyper-X's hypernetwork reads, so that the other methods' runs may differ in it for both.

`Section` reads its part of a config mapping: fields absent from it take their defaults, lists
become the declared tuples, and a key the section does not declare is reported, as every
problem is, by a line that names the field (`config.data.tempreature: unknown field; ...`).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, ClassVar, Mapping, Optional

DOC, RESUMABLE, COMPARE_IGNORES, AS_LIST = "doc", "resumable", "compare_ignores", "as_list"
HYPERNETWORK_ONLY = "hypernetwork_only"


def field(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = None,
    resumable: bool = False,
    compare_ignores: bool = False,
    hypernetwork_only: bool = False,
    as_list: bool = False,
) -> Any:
  """A dataclass field with its meaning and change policy. `as_list`: `get_config` writes the
  default as a list (fields that experiment configs extend: languages, streams)."""
  metadata = {
      DOC: doc,
      RESUMABLE: resumable,
      COMPARE_IGNORES: compare_ignores,
      HYPERNETWORK_ONLY: hypernetwork_only,
      AS_LIST: as_list,
  }
  if factory is not None:
    return dataclasses.field(default_factory=factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def plain(value: Any) -> Any:
  """ConfigDict / FrozenConfigDict (possibly nested in lists) -> plain Python values."""
  if hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, Mapping):
    return {k: plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(plain(v) for v in value)
  return value


def as_type(value: Any, hint: Any) -> Any:
  """A JSON-like value in the form a type hint declares: lists become (nested) tuples where the
  hint says tuple; anything else is kept as it is (checks report wrong values, decoding never
  raises)."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any and isinstance(value, list):  # JSON arrays read back as the tuples written
    return tuple(as_type(v, Any) for v in value)
  if origin is typing.Union:
    inner = [a for a in args if a is not type(None)]
    return value if value is None or len(inner) != 1 else as_type(value, inner[0])
  if origin is tuple and isinstance(value, (list, tuple)):
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(as_type(v, args[0]) for v in value)
    if args and len(args) == len(value):
      return tuple(as_type(v, a) for v, a in zip(value, args))
    return tuple(value)
  return value


@functools.cache
def hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def default_of(f: dataclasses.Field) -> Any:
  if f.default is not dataclasses.MISSING:
    return f.default
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  return dataclasses.MISSING


def _placeholder_type(hint: Any) -> Optional[type]:
  """str for Optional[str], tuple for Optional[tuple[...]]: what a None default accepts."""
  for arg in typing.get_args(hint):
    if arg is not type(None):
      return typing.get_origin(arg) or arg
  return None


class Section:
  """A typed part of the config. `PATH`: its key in the config ('' for top-level fields)."""

  PATH: ClassVar[str] = ""

  @classmethod
  def where(cls, name: str = "") -> str:
    """'config.data.batch_size' for name 'batch_size'."""
    parts = ["config"] + [p for p in (cls.PATH, name) if p]
    return ".".join(parts)

  @classmethod
  def declared(cls) -> tuple[dataclasses.Field, ...]:
    """The fields a config mapping may hold (all, unless a subclass derives some)."""
    return dataclasses.fields(cls)

  @classmethod
  def decode(
      cls,
      raw: Optional[Mapping[str, Any]],
      errors: list[str],
      where: Optional[str] = None,
      **derived: Any,
  ):
    """The section from its config mapping; absent fields take their defaults, unknown keys are
    reported in `errors` (`where` names the mapping in messages, default `where()`)."""
    raw = plain(raw) if raw is not None else {}
    if not isinstance(raw, Mapping):
      errors.append(f"{where or cls.where()}: expected a mapping of fields, got {raw!r}")
      raw = {}
    known = {f.name: f for f in cls.declared()}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
      errors.append(f"{where or cls.where()}: unknown field(s) {unknown}; known: {sorted(known)}")
    values = {name: as_type(raw[name], hints(cls)[name]) for name in known if name in raw}
    return cls(**values, **derived)

  @classmethod
  def defaults(cls) -> dict[str, Any]:
    """{name: default} of the declared fields, as a ConfigDict holds them (None defaults as typed
    placeholders, so that `--config.x=...` can set them)."""
    from ml_collections import config_dict  # pylint: disable=g-import-not-at-top (torch_loader)

    out = {}
    for f in cls.declared():
      value = default_of(f)
      if value is None and _placeholder_type(hints(cls)[f.name]) is not None:
        value = config_dict.placeholder(_placeholder_type(hints(cls)[f.name]))
      elif isinstance(value, Section):
        value = value.defaults()
      elif f.metadata.get(AS_LIST):
        value = list(value)
      out[f.name] = value
    return out

  def check(self, errors: list[str]) -> None:
    """Appends one line per bad field; checks that need nothing but the values themselves."""


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_choice(errors: list[str], where: str, value: Any, known: Any) -> bool:
  """`value in known`, else a line naming the choices."""
  if value in known:
    return True
  errors.append(f"{where}: {value!r} is not one of {list(known)}")
  return False


def check_positive(errors: list[str], where: str, value: Any, what: str = "an int") -> None:
  ok = is_int(value) if what == "an int" else is_number(value)
  if not ok or value <= 0:
    errors.append(f"{where}: must be {what} > 0, got {value!r}")
