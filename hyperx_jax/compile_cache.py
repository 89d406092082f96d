"""JAX's persistent compilation cache, on by default: a resumed run, a second seed, `evaluate`
and `predict` load the executables an earlier process compiled instead of compiling again.

Where it lives: `--compilation_cache=DIR`, else `$HYPERX_COMPILATION_CACHE`, else
`$JAX_COMPILATION_CACHE_DIR`, else `<asset cache>/jax_compilation_cache` (the asset cache is
`$HYPERX_CACHE`, default `~/.cache/hyperx_jax`). `off` (as the flag or the variable) turns it
off. An executable is cached once its
compile took at least a second (jax's `jax_persistent_cache_min_compile_time_secs`); the cache
key covers the program, its shapes and shardings, the device kind and the jax version, so a
changed model or batch compiles afresh.

`Events` counts the cache's hits and writes (jax.monitoring), so that a compile can say where
its executable came from.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

OFF = "off"
ENV = "HYPERX_COMPILATION_CACHE"  # a directory, or off
JAX_ENV = "JAX_COMPILATION_CACHE_DIR"
HITS, WRITES = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"


def directory(flag: Optional[str] = None) -> Optional[str]:
  """The cache directory `flag` asks for (None: off)."""
  flag = flag or os.environ.get(ENV) or os.environ.get(JAX_ENV)
  if flag == OFF:
    return None
  if flag:
    return os.path.abspath(os.path.expanduser(flag))
  cache = os.path.expanduser(os.environ.get("HYPERX_CACHE") or "~/.cache/hyperx_jax")
  return os.path.join(cache, "jax_compilation_cache")


def enable(flag: Optional[str] = None) -> Optional[str]:
  """Points jax at the cache directory (or turns the cache off); returns the directory."""
  path = directory(flag)
  if "jax" not in sys.modules and path:  # read by jax when it is imported
    os.environ[JAX_ENV] = path
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_enable_compilation_cache", path is not None)
  Events.install()
  return path


class Events:
  """How many executables this process loaded from the cache and wrote to it."""

  hits = 0
  writes = 0
  _installed = False

  @classmethod
  def install(cls) -> None:
    if cls._installed:
      return
    import jax  # pylint: disable=g-import-not-at-top

    def count(event: str, **kwargs) -> None:
      del kwargs
      if event == HITS:
        cls.hits += 1
      elif event == WRITES:
        cls.writes += 1

    jax.monitoring.register_event_listener(count)
    cls._installed = True

  @classmethod
  def snapshot(cls) -> tuple[int, int]:
    return cls.hits, cls.writes

  @classmethod
  def since(cls, snapshot: tuple[int, int]) -> str:
    """Where the executables compiled since `snapshot` came from, for the compile line."""
    if not cls._installed:
      return ""
    hits, writes = cls.hits - snapshot[0], cls.writes - snapshot[1]
    if hits:
      return " (from the persistent compilation cache)"
    if writes:
      return " (saved to the persistent compilation cache)"
    return ""
