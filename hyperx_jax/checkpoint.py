"""Orbax checkpoints of the trainable state, optimiser state, RNG and data-iterator state.

Layout of `<workdir>/checkpoints/<step>/` (one orbax `CheckpointManager`, `ocp.args.Composite`):

    trainable/   the trainable parameters as a pure nested dict (`nnx.to_pure_dict`), sharded
    opt_state/   the optax state (same tree as the optimiser's), sharded
    data_state/  JSON: the data mixture / iterator state (whatever the trainer passes)
    meta/        JSON: step, RNG (impl + key data), metrics

The frozen backbone is not saved: it reloads from its pretrained source. Saves are async;
the manager keeps the latest `keep` checkpoints and, with `best_metric`, also the best one by
that metric (`LatestN` or `BestN` preservation). Restoring the latest step falls back to the
previous complete one (with a warning) when the latest cannot be read (an interrupted save, a
missing item).

Preemption: `install_preemption_handler()` turns SIGTERM into a flag that the trainer polls at
step boundaries, then saves (`force=True`) and exits. In multi-process runs that flag may be set
on some hosts only, so the trainer also asks `Checkpointer.reached_preemption(step)` (orbax's
sync point on JAX's preemption service, which every host answers the same at the same step).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from typing import Any, Optional, Sequence

import jax
import numpy as np
from etils import epath
import orbax.checkpoint as ocp
from flax import nnx


ITEMS = ("trainable", "opt_state", "data_state", "meta")


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
  return {"impl": str(jax.random.key_impl(rng)) if typed else None,
          "key_data": np.asarray(data).tolist()}


def _rng_from_json(d: Optional[dict]) -> Any:
  if d is None:
    return None
  data = np.asarray(d["key_data"], np.uint32)
  return jax.random.wrap_key_data(data, impl=d["impl"]) if d["impl"] else jax.numpy.asarray(data)


def _preservation(keep: int, best_metric: Optional[str], best_mode: str):
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  if best_metric:
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=_metric_fn(best_metric, best_mode), reverse=(best_mode == "min"), n=1,
        keep_checkpoints_without_metrics=False))
  return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


def _metric_fn(name: str, mode: str):
  worst = float("-inf") if mode == "max" else float("inf")
  return lambda metrics: float(metrics.get(name, worst)) if metrics else worst


def absolute_path(path: str | os.PathLike) -> epath.Path:
  """A local path made absolute; URLs such as gs://bucket/run are kept as they are."""
  return epath.Path(path) if "://" in str(path) else epath.Path(os.path.abspath(path))


class Checkpointer:
  """Saves and restores the training state under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               best_metric: Optional[str] = None, best_mode: str = "max",
               read_only: bool = False):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self.directory = absolute_path(workdir) / "checkpoints"
    self.best_metric, self.best_mode = best_metric, best_mode
    options = ocp.CheckpointManagerOptions(
        best_fn=_metric_fn(best_metric, best_mode) if best_metric else None,
        best_mode=best_mode,
        preservation_policy=_preservation(keep, best_metric, best_mode),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only,
        read_only=read_only,
        create=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def save(self, step: int, *, trainable: Any, opt_state: Any, rng: Any = None,
           data_state: Optional[dict] = None, metrics: Optional[dict] = None,
           force: bool = False) -> bool:
    """Starts an (async) save; returns whether a checkpoint was started (False when this step
    is already saved, e.g. a preemption right after a periodic save)."""
    if int(step) in self.manager.all_steps():
      logging.info("checkpoint step %d already saved in %s", step, self.directory)
      return False
    metrics = {k: float(v) for k, v in metrics.items()} if metrics else None
    meta = {"step": int(step), "rng": _rng_to_json(rng), "metrics": metrics}
    items = dict(trainable=ocp.args.StandardSave(_to_pure(trainable)),
                 data_state=ocp.args.JsonSave(data_state if data_state is not None else {}),
                 meta=ocp.args.JsonSave(meta))
    if jax.tree.leaves(opt_state):  # orbax rejects empty trees (e.g. plain SGD's state)
      items["opt_state"] = ocp.args.StandardSave(opt_state)
    return self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics,
                             force=force)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def best_step(self) -> Optional[int]:
    return self.manager.best_step() if self.best_metric else None

  def restore(self, step: Optional[int] = None, *, abstract_trainable: Any,
              abstract_opt_state: Any = None) -> dict:
    """Restores `step` (default: the latest readable one) into the given abstract targets
    (ShapeDtypeStructs or arrays carrying the shardings to restore to). Returns a dict with
    step, trainable, opt_state (None if no target given), rng, data_state, metrics."""
    if step is not None:
      return self._restore(step, abstract_trainable, abstract_opt_state)
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    errors = []
    for s in steps:
      try:
        return self._restore(s, abstract_trainable, abstract_opt_state)
      except Exception as e:  # noqa: BLE001  (any unreadable item: fall back)
        errors.append(f"step {s}: {type(e).__name__}: {e}")
        msg = (f"checkpoint step {s} in {self.directory} is incomplete or unreadable "
               f"({type(e).__name__}: {str(e)[:300]}); falling back to the previous one")
        warnings.warn(msg, RuntimeWarning)
        logging.warning("%s", msg)
    raise RuntimeError(f"no readable checkpoint in {self.directory}:\n" + "\n".join(errors))

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
    return {"step": int(step), "trainable": trainable,
            "opt_state": restored["opt_state"] if "opt_state" in items else abstract_opt_state,
            "rng": _rng_from_json(meta.get("rng")), "data_state": restored["data_state"],
            "metrics": meta.get("metrics")}

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
