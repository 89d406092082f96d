"""Test-only fault injection: nothing happens unless the environment variable HYPERX_FAULT is set.

    HYPERX_FAULT=<action>:<point>:<at>      e.g. kill:train_step:5, disk_full:save_start:6

makes a run fail at one exact place, so tests/test_faults.py can hit "during X" every time.

Actions:
  kill       SIGKILL to this process (a real signal: no handler, no cleanup)
  term       SIGTERM to this process (the preemption handler's signal)
  nan        the train step `at` runs on a NaN backbone, so its loss is NaN (`poison_if_requested`)
  disk_full  from here on every write that grows a file fails (EFBIG, RLIMIT_FSIZE = 0), as on a
             full disk; reads, renames and deletes still work

Points (each reached from one place):
  train_step:<step>       train.Trainer.train, the step dispatched but its result not yet kept
  save_start:<step>       checkpoint.Checkpointer.save, before the save writes anything
  save_in_flight:<step>   checkpoint.Checkpointer.save, the async save started, not committed
  eval:<task:lang>        evaluate.evaluate_all, before that pair is evaluated
  write:<file name>       fileio.atomic_write, the temporary file written, not yet renamed
"""

from __future__ import annotations

import os
import resource
import signal
from typing import Any, Optional

ENV = "HYPERX_FAULT"
ACTIONS = ("kill", "term", "nan", "disk_full")


def requested(point: str, at: Any) -> Optional[str]:
  """The action HYPERX_FAULT asks for at (point, at), or None."""
  spec = os.environ.get(ENV)
  if not spec:
    return None
  action, _, where = spec.partition(":")
  if action not in ACTIONS:
    raise ValueError(f"{ENV}={spec!r}: action {action!r} is not one of {ACTIONS}")
  return action if where == f"{point}:{at}" else None


def inject(point: str, at: Any) -> None:
  """Carries out a kill, term or disk_full fault requested at (point, at)."""
  action = requested(point, at)
  if action in ("kill", "term"):
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGTERM)
  elif action == "disk_full":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def poison_if_requested(step: int, frozen: Any) -> Any:
  """`frozen` with NaN floats when a nan fault is requested at train_step:<step>, else itself."""
  if requested("train_step", step) != "nan":
    return frozen
  import jax  # pylint: disable=g-import-not-at-top  (here: report and fileio stay jax-free)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  return jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x, frozen)
