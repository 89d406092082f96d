"""What the benchmark scripts share: a one-task config, batches, a compiled step, timing.

`SpeedRun` is the trainer's own jitted step (`train.make_train_step`: AdamW, clipping,
donation) compiled for one spec on one device and one fixed batch; `interleaved` and
`time_interleaved` time several runs (or calls) in rounds, so that drift in the machine's load
hits all of them alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from hyperx_jax import optim, run, train
from hyperx_jax.config import RunSpec, common
from hyperx_jax.config.vocabulary import MLM, TOKEN

SMALL_ENCODER = {
    "model_type": "xlm-roberta",
    "vocab_size": 8000,
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
}
NUM_LABELS = 17
TASK = "task"  # the one task of `bench_config`


def one_device_mesh() -> Mesh:
  return Mesh(
      np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
      ("data", "fsdp", "tensor"),
      axis_types=(AxisType.Auto,) * 3,
  )


def bench_config(
    method: str,
    checkpoint: str | None,
    batch: int,
    length: int,
    *,
    kind: str = TOKEN,
    preset: str = "base",
):
  c = common.get_config()
  common.set_method(c, method)
  c.model.checkpoint, c.model.preset = checkpoint, preset
  c.tokenizer = "unused"
  if kind == MLM:
    c.tasks[TASK] = dict(common.MLM_TASK)
  else:
    labels = [f"L{i}" for i in range(NUM_LABELS if kind == TOKEN else 3)]
    c.tasks[TASK] = {"kind": kind, "labels": labels, "metric": "accuracy"}
  c.languages = ["en", "tr"]
  c.data.batch_size, c.data.max_length = batch, length
  c.total_steps, c.optim.warmup_steps = 1000, 10
  return c


def random_batch(batch: int, length: int, vocab: int, kind: str, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  labels_shape = (batch, length) if kind == TOKEN else (batch,)
  return {
      "input_ids": rng.integers(5, vocab, (batch, length), dtype=np.int32),
      "attention_mask": np.ones((batch, length), np.int32),
      "token_type_ids": np.zeros((batch, length), np.int32),
      "labels": rng.integers(0, 3, labels_shape, dtype=np.int32),
      "task_id": np.zeros(batch, np.int32),
      "lang_id": np.ones(batch, np.int32),
      "example_mask": np.ones(batch, np.int32),
  }


@contextlib.contextmanager
def encoder_dir(encoder: Mapping[str, Any]) -> Iterator[str]:
  """A temporary checkpoint directory holding only `encoder` as its config.json (random
  weights: `run.create_model(..., load_pretrained=False)`)."""
  with tempfile.TemporaryDirectory() as ckpt:
    with open(os.path.join(ckpt, "config.json"), "w") as f:
      json.dump(dict(encoder), f)
    yield ckpt


def _step_fn(mesh: Mesh, parts, tx, opt_state):
  shardings = (
      run.shardings_of(parts.trainable),
      run.shardings_of(opt_state),
      run.shardings_of(parts.frozen),
  )
  return train.make_train_step(parts.graphdef, tx, shardings, mesh)


class SpeedRun:
  """A spec's compiled trainer step on one device and one fixed batch; `step()` runs one
  update.

  `local_batch`: the numpy batch every step trains on (task `TASK`). `load_pretrained`: the
  encoder weights from the spec's checkpoint (else random; speed does not depend on them).
  Before the first step, `state` holds the initial (trainable, opt_state); steps donate it.
  """

  def __init__(
      self,
      spec: RunSpec,
      local_batch: Mapping[str, np.ndarray],
      *,
      name: Optional[str] = None,
      load_pretrained: bool = False,
  ):
    self.spec = spec
    mesh = one_device_mesh()
    parts, _ = run.create_model(spec, mesh, load_pretrained=load_pretrained)
    self.model_config = parts.config
    self.method, self.batch = name or spec.method, int(local_batch["input_ids"].shape[0])
    self.graphdef = parts.graphdef
    self.trainable_params = int(sum(x.size for x in jax.tree.leaves(parts.trainable)))
    tx = optim.make_optimizer(spec.optim, spec.total_steps, parts.trainable)
    opt_state = train.init_optimizer(tx, parts.trainable, mesh)
    step_fn = _step_fn(mesh, parts, tx, opt_state)
    self.frozen = parts.frozen
    self.batch_arrays = train.global_batch(dict(local_batch), mesh)
    self.rng = jax.random.key(0)
    t0 = time.perf_counter()
    self.compiled = step_fn.lower(
        parts.trainable, opt_state, self.frozen, self.batch_arrays, np.int32(0), self.rng, TASK
    ).compile()
    self.compile_s = time.perf_counter() - t0
    self.state = (parts.trainable, opt_state)
    self.i = 0
    self.times: list[float] = []
    self.losses: list[float] = []
    self.metrics: dict[str, Any] = {}

  def step(self, timed: bool = True) -> None:
    t0 = time.perf_counter()
    trainable, opt_state, m = self.compiled(
        *self.state, self.frozen, self.batch_arrays, np.int32(self.i), self.rng
    )
    jax.block_until_ready((trainable, m["loss"]))
    if timed:
      self.times.append(time.perf_counter() - t0)
    self.state, self.i, self.metrics = (trainable, opt_state), self.i + 1, m
    self.losses.append(float(m["loss"]) if bool(m["finite"]) else float("nan"))

  def result(self) -> dict[str, Any]:
    """Median step time and rates; the first and last loss (the same batch every step, so it
    falls; NaN for a step whose loss or gradient was not finite)."""
    step_s = float(np.median(self.times))
    return {
        "method": self.method,
        "trainable_params": self.trainable_params,
        "compile_s": self.compile_s,
        "step_s": step_s,
        "steps_per_s": 1 / step_s,
        "examples_per_s": self.batch / step_s,
        "first_loss": self.losses[0],
        "last_loss": self.losses[-1],
    }


def interleaved(runs, steps: int, warmup: int = 1) -> None:
  """`warmup` untimed steps of each run, then `steps` rounds of one timed step of each, so that
  drift in the machine's load hits every run alike. A run: `.step(timed: bool)`."""
  for _ in range(warmup):
    for r in runs:
      r.step(timed=False)
  for _ in range(steps):
    for r in runs:
      r.step()


def time_interleaved(
    calls: Mapping[str, Callable[[int], Any]],
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
  """Seconds per call of each `call(round)` (which must block until its result is ready):
  `warmup` untimed rounds (compilation), then `repeats` timed rounds of one call of each, so
  that drift in the machine's load hits every call alike."""
  times: dict[str, list[float]] = {name: [] for name in calls}
  for i in range(warmup + repeats):
    for name, call in calls.items():
      t0 = clock()
      call(i)
      if i >= warmup:
        times[name].append(clock() - t0)
  return times
