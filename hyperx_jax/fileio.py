"""Small files written whole or not at all (config.json, results.*, exported adapters).

`atomic_write(path, write_fn)` fills a temporary sibling `.<name>.tmp-<pid>`, flushes and syncs
it, and renames it over `path`: a reader, or a run that was killed, sees the old file or the new
one, never a part. A temporary left by a killed writer is removed by the next write of `path`.
"""

from __future__ import annotations

import os
from typing import IO, Callable

from etils import epath

from hyperx_jax import faults


def _is_local(path: epath.Path) -> bool:
  return "://" not in os.fspath(path)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # signal 0: only asks whether the process exists
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # it exists, run by another user
  return True


def _temporary(path: epath.Path, pid: int) -> epath.Path:
  return path.parent / f".{path.name}.tmp-{pid}"


def _remove_stale_temporaries(path: epath.Path) -> None:
  """Temporaries of `path` whose writer no longer runs on this machine (killed mid-write)."""
  prefix = _temporary(path, 0).name[:-1]
  for tmp in path.parent.glob(f"{prefix}*"):
    pid = tmp.name[len(prefix) :]
    if pid.isdigit() and not _pid_alive(int(pid)):
      tmp.unlink()


def atomic_write(
    path: str | os.PathLike, write_fn: Callable[[IO], None], *, binary: bool = False
) -> None:
  """write_fn(file) fills a temporary sibling that then replaces `path`; on an error the
  temporary is removed and `path` is left as it was."""
  path = epath.Path(path)
  if _is_local(path) and path.parent.exists():
    _remove_stale_temporaries(path)
  tmp = _temporary(path, os.getpid())
  try:
    with tmp.open("wb" if binary else "w") as f:
      write_fn(f)
      if _is_local(path):
        f.flush()
        os.fsync(f.fileno())
    faults.inject("write", path.name)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write(path, lambda f: f.write(text))
