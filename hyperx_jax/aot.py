"""Jitted functions compiled ahead of time, once per value of their static argument, each compile
announced on the console:

    compiling train step (task pos) … done in 12.3 s (saved to the persistent compilation cache)

`AheadOfTime(jitted, 'train step (task {})', static_argnum)` is called like the jitted
function. The first call with a new static value (e.g. a task name) lowers and compiles it
(`jitted.lower(*args).compile()`); every call runs that executable, so nothing compiles
twice (jit's own cache stays empty) and the compile time is measured apart from running.
Every process lowers the same program from the same global shapes and shardings, as jit
itself would. The line says when the executable came from, or went to, jax's persistent
compilation cache (`compile_cache.py`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Hashable

from hyperx_jax.compile_cache import Events


class AheadOfTime:
  """A jitted function with one executable per value of its static argument."""

  def __init__(self, jitted: Any, what: str, static_argnum: int):
    self.jitted = jitted
    self.what = what  # e.g. 'train step (task {})': '{}' takes the static value
    self.static_argnum = static_argnum
    self.executables: dict[Hashable, Any] = {}

  def __contains__(self, key: Hashable) -> bool:
    return key in self.executables

  def compile(self, *args) -> Any:
    """The executable for `args`' static value, compiled (and announced) on first use."""
    key = args[self.static_argnum]
    if key not in self.executables:
      start, cache = time.monotonic(), Events.snapshot()
      self.executables[key] = self.jitted.lower(*args).compile()
      logging.info(
          "compiling %s … done in %.1f s%s",
          self.what.format(key),
          time.monotonic() - start,
          Events.since(cache),
      )
    return self.executables[key]

  def __call__(self, *args) -> Any:
    executable = self.compile(*args)
    return executable(*args[: self.static_argnum], *args[self.static_argnum + 1 :])
