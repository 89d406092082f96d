"""What every asset module shares: the error type, the progress log, sizes and atomic writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable

from hyperx_jax.errors import UserError


class AssetError(UserError):
  """An asset could not be fetched, verified or converted; the message says what to do."""


def log(msg: str) -> None:
  print(f"[assets] {msg}", flush=True)


def human_size(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1024 or unit == "GB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  raise AssertionError


def tree_size(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def write_json(path: str, obj) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False)
    f.write("\n")


def atomic_dir(final: str, build: Callable[[str], object]) -> object:
  """Runs build(tmp_dir) then renames tmp_dir to `final`; on error removes tmp_dir."""
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final)}.tmp-")
  os.rmdir(tmp)  # build() creates it, so converters can insist on a fresh directory
  try:
    result = build(tmp)
    os.replace(tmp, final)
    return result
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
