"""Orbax checkpoints of the trainable state, optimiser state, RNG and data-iterator state.

Layout of `<workdir>/checkpoints/<step>/` (one orbax `CheckpointManager`, `ocp.args.Composite`):

    trainable/   the trainable parameters as a pure nested dict (`nnx.to_pure_dict`), sharded
    opt_state/   the optax state (same tree as the optimiser's), sharded
    data_state/  JSON: the data mixture / iterator state (whatever the trainer passes)
    meta/        JSON: step, RNG (impl + key data), metrics

The frozen backbone is not saved: it reloads from its pretrained source. Saves are async;
the manager keeps the latest `keep` checkpoints and, with `best_metric`, also the best one by
that metric (`LatestN` or `BestN` preservation). An interrupted save leaves only orbax's
temporary directory, removed when the next writable Checkpointer opens the directory.

Unreadable steps (a truncated file, a missing item, a data state the trainer rejects):
`restore` refuses a step other than the one asked for (default: the latest) unless
`allow_fallback=True`; then it takes the latest readable earlier step and warns naming both.
A writable Checkpointer (the trainer's) moves each unreadable step it fell back over to
`checkpoints/corrupt/<step>-<time>` (kept for inspection, out of orbax's step list), so training
saves that step again when it passes it. Nothing is moved when no step is readable (e.g. a
changed model: every step fails the same way).

Preemption: `install_preemption_handler()` turns SIGTERM into a flag that the trainer polls at
step boundaries, then saves (`force=True`) and exits. In multi-process runs that flag may be set
on some hosts only, so the trainer also asks `Checkpointer.reached_preemption(step)` (orbax's
sync point on JAX's preemption service, which every host answers the same at the same step).
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import threading
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from hyperx_jax import faults

ITEMS = ("trainable", "opt_state", "data_state", "meta")
CORRUPT_DIR = "corrupt"


class UnreadableCheckpointError(RuntimeError):
  """The checkpoint step asked for (or every candidate step) cannot be restored."""


def _to_pure(tree: Any) -> Any:
  return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


def _abstract(tree: Any) -> Any:
  """Arrays or ShapeDtypeStructs -> ShapeDtypeStructs keeping their shardings (restore targets)."""

  def one(x):
    if hasattr(x, "shape") and hasattr(x, "dtype"):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
    return x

  return jax.tree.map(one, tree)


def _rng_to_json(rng: Any) -> Optional[dict]:
  if rng is None:
    return None
  typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
  data = jax.random.key_data(rng) if typed else rng
  if isinstance(data, jax.Array) and not data.is_fully_addressable:
    data = data.addressable_data(0)  # replicated: every host holds the whole key
  return {
      "impl": str(jax.random.key_impl(rng)) if typed else None,
      "key_data": np.asarray(data).tolist(),
  }


def _rng_from_json(d: Optional[dict]) -> Any:
  if d is None:
    return None
  data = np.asarray(d["key_data"], np.uint32)
  return jax.random.wrap_key_data(data, impl=d["impl"]) if d["impl"] else jax.numpy.asarray(data)


def _preservation(keep: int, best_metric: Optional[str], best_mode: str):
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  if best_metric:
    policies.append(
        ocp.checkpoint_managers.BestN(
            get_metric_fn=_metric_fn(best_metric, best_mode),
            reverse=(best_mode == "min"),
            n=1,
            keep_checkpoints_without_metrics=False,
        )
    )
  return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


def _metric_fn(name: str, mode: str):
  worst = float("-inf") if mode == "max" else float("inf")
  return lambda metrics: float(metrics.get(name, worst)) if metrics else worst


def absolute_path(path: str | os.PathLike) -> epath.Path:
  """A local path made absolute; URLs such as gs://bucket/run are kept as they are."""
  return epath.Path(path) if "://" in str(path) else epath.Path(os.path.abspath(path))


class Checkpointer:
  """Saves and restores the training state under `<workdir>/checkpoints`."""

  def __init__(
      self,
      workdir: str,
      *,
      keep: int = 3,
      async_save: bool = True,
      best_metric: Optional[str] = None,
      best_mode: str = "max",
      read_only: bool = False,
  ):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = absolute_path(workdir) / "checkpoints"
    self.best_metric, self.best_mode = best_metric, best_mode
    self.read_only = read_only
    options = ocp.CheckpointManagerOptions(
        best_fn=_metric_fn(best_metric, best_mode) if best_metric else None,
        best_mode=best_mode,
        preservation_policy=_preservation(keep, best_metric, best_mode),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only,
        read_only=read_only,
        create=False,
    )  # the first save creates it: opening a workdir changes nothing
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def save(
      self,
      step: int,
      *,
      trainable: Any,
      opt_state: Any,
      rng: Any = None,
      data_state: Optional[dict] = None,
      metrics: Optional[dict] = None,
      force: bool = False,
  ) -> bool:
    """Starts an (async) save; returns whether a checkpoint was started (False when this step
    is already saved, e.g. a preemption right after a periodic save)."""
    if int(step) in self.manager.all_steps():
      logging.info("checkpoint step %d already saved in %s", step, self.directory)
      return False
    metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
    meta = {"step": int(step), "rng": _rng_to_json(rng), "metrics": metrics}
    items = dict(
        trainable=ocp.args.StandardSave(_to_pure(trainable)),
        data_state=ocp.args.JsonSave(data_state if data_state is not None else {}),
        meta=ocp.args.JsonSave(meta),
    )
    if jax.tree.leaves(opt_state):  # orbax rejects empty trees (e.g. plain SGD's state)
      items["opt_state"] = ocp.args.StandardSave(opt_state)
    faults.inject("save_start", step)
    started = self.manager.save(
        int(step), args=ocp.args.Composite(**items), metrics=metrics, force=force
    )
    faults.inject("save_in_flight", step)
    return started

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def best_step(self) -> Optional[int]:
    return self.manager.best_step() if self.best_metric else None

  def restore(
      self,
      step: Optional[int] = None,
      *,
      abstract_trainable: Any,
      abstract_opt_state: Any = None,
      allow_fallback: bool = False,
      check: Optional[Callable[[dict], None]] = None,
  ) -> dict:
    """Restores `step` (default: the latest) into the given abstract targets (ShapeDtypeStructs
    or arrays carrying the shardings to restore to). Returns a dict with step, trainable,
    opt_state (None if no target given), rng, data_state, metrics.

    `check(restored)` may reject a step by raising (e.g. a data state the iterator cannot take).
    An unreadable step is an UnreadableCheckpointError unless `allow_fallback`: then the earlier
    steps are tried newest first (see the module docstring)."""
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint step {step} in {self.directory}; steps: {steps}")
    candidates = [s for s in reversed(steps) if s <= step] if allow_fallback else [step]
    failed: list[tuple[int, str]] = []
    for s in candidates:
      try:
        restored = self._restore(s, abstract_trainable, abstract_opt_state)
        if check is not None:
          check(restored)
      except Exception as e:  # noqa: BLE001  (any unreadable item: the step is unreadable)
        failed.append((s, f"{type(e).__name__}: {str(e)[:300]}"))
        continue
      if failed:
        self._fell_back(failed, s)
      return restored
    raise UnreadableCheckpointError(self._unreadable_message(failed, allow_fallback))

  def _unreadable_message(self, failed: list[tuple[int, str]], allow_fallback: bool) -> str:
    lines = "\n".join(f"  step {s}: {error}" for s, error in failed)
    if allow_fallback:
      return f"no readable checkpoint in {self.directory} (nothing was moved aside):\n{lines}"
    return (
        f"checkpoint step {failed[0][0]} in {self.directory} is unreadable:\n{lines}\n"
        "Rerun the training command (it moves the step aside and saves it again), or allow "
        "the latest readable earlier step (allow_fallback=True / --allow_fallback)."
    )

  def _fell_back(self, failed: list[tuple[int, str]], used: int) -> None:
    """Warns naming the unreadable steps and the one used; a writable Checkpointer moves the
    unreadable ones aside so that they are saved again."""
    for s, error in failed:
      where = "" if self.read_only else f", moved to {self._move_aside(s)}"
      msg = (
          f"checkpoint step {s} in {self.directory} is unreadable ({error}){where}; "
          f"using step {used}"
      )
      warnings.warn(msg, RuntimeWarning)
      logging.warning("%s", msg)
    if not self.read_only:
      self.manager.reload()

  def _move_aside(self, step: int) -> epath.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = self.directory / CORRUPT_DIR / f"{step}-{stamp}"
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:  # every process reloads the step list after the move
      multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
    return target

  def _restore(self, step: int, abstract_trainable: Any, abstract_opt_state: Any) -> dict:
    items = {
        "trainable": ocp.args.StandardRestore(_abstract(_to_pure(abstract_trainable))),
        "data_state": ocp.args.JsonRestore(),
        "meta": ocp.args.JsonRestore(),
    }
    if jax.tree.leaves(abstract_opt_state):
      items["opt_state"] = ocp.args.StandardRestore(_abstract(abstract_opt_state))
    restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
    trainable = restored["trainable"]
    if isinstance(abstract_trainable, nnx.State):
      state = jax.tree.map(lambda x: x, abstract_trainable)  # a copy to fill in
      nnx.replace_by_pure_dict(state, trainable)
      trainable = state
    meta = restored["meta"] or {}
    return {
        "step": int(step),
        "trainable": trainable,
        "opt_state": restored["opt_state"] if "opt_state" in items else abstract_opt_state,
        "rng": _rng_from_json(meta.get("rng")),
        "data_state": restored["data_state"],
        "metrics": meta.get("metrics"),
    }

  def reached_preemption(self, step: int) -> bool:
    """Orbax's multi-host preemption sync point (False without JAX's preemption service)."""
    return self.manager.reached_preemption(int(step))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class PreemptionFlag:
  """Callable: True once SIGTERM has been received. `uninstall()` restores the old handler."""

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
    self._event = threading.Event()
    self._previous = {s: signal.signal(s, self._handle) for s in signals}

  def _handle(self, signum, frame):
    del frame
    logging.warning("signal %d received: saving a checkpoint at the next step boundary", signum)
    self._event.set()

  def __call__(self) -> bool:
    return self._event.is_set()

  def uninstall(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}


def install_preemption_handler() -> PreemptionFlag:
  """SIGTERM -> a flag; returns `is_requested()` (call it at every step boundary).

  With several processes, JAX's own preemption notifier owns SIGTERM (a Python handler would
  replace it and break the sync point), so the flag stays False there and
  `Checkpointer.reached_preemption(step)` is the signal to use."""
  if jax.process_count() > 1:
    logging.info("multi-process run: SIGTERM is left to JAX's preemption service")
    return PreemptionFlag(signals=())
  return PreemptionFlag()
