"""One jax process of a multi-process test run on localhost (started by tests/test_multihost.py).

  python tests/multihost_worker.py SCENARIO --process_id=I --num_processes=N --port=P \
      --out=DIR [--options=JSON]

The parent sets XLA_FLAGS (fake CPU devices per process) before this starts. With N > 1 the
processes join one jax runtime through `hyperx_jax.distributed.initialize`: coordinator on
127.0.0.1:P, or with --port=0 from the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID environment; the train scenario goes through `hyperx_jax.main` and its
--coordinator_address flags. With N == 1 it is a plain single-process run, the reference.
Each scenario returns a JSON-able dict that lands in DIR/result_<I>.json; arrays too big for
JSON go to DIR/*_<I>.npz.

Scenarios:
  collectives  the global batch from per-host rows, jitted reductions, a gradient, random bits
  checkpoint   orbax CheckpointManager and hyperx_jax.checkpoint.Checkpointer: a sharded array
               written by every process, restored into other shardings
  train        `python -m hyperx_jax.main` on the tiny config: this host's rows of every
               training batch, the files it opened for writing, the run's outcome; with
               `pause_after` it pauses mid-run so the test can send SIGTERM
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any, Callable, Optional

TESTS_DIR = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS_DIR.parent), str(TESTS_DIR)]

import jax  # noqa: E402  (after sys.path; XLA_FLAGS come from the parent)
import numpy as np  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)  # as tests/conftest.py

# The collectives scenario: a [ROWS, COLS] global batch, host p holding its contiguous rows.
ROWS, COLS, OUT = 16, 6, 3


def global_inputs() -> tuple[np.ndarray, np.ndarray]:
  """The global batch x [ROWS, COLS] and a weight w [COLS, OUT] (recomputed by the test)."""
  x = (np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS) % 11 - 5) / 4
  w = np.linspace(-1, 1, COLS * OUT, dtype=np.float32).reshape(COLS, OUT)
  return x, w


def host_rows(n: int, process_index: int, process_count: int) -> slice:
  local = n // process_count
  return slice(process_index * local, (process_index + 1) * local)


def make_mesh(shape: tuple[int, ...]):
  from hyperx_jax import sharding  # pylint: disable=g-import-not-at-top
  from hyperx_jax.config import MeshSpec  # pylint: disable=g-import-not-at-top

  return sharding.make_mesh(MeshSpec(shape=shape))


def fetch(x: jax.Array) -> np.ndarray:
  """The full value of a (possibly non-addressable) global array on this host."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def start_runtime(args: argparse.Namespace) -> None:
  """Joins the N-process runtime: coordinator from --port, or (--port=0) from the
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment."""
  from hyperx_jax import distributed  # pylint: disable=g-import-not-at-top

  if args.num_processes == 1:
    assert not distributed.initialize(), "a single process needs no runtime"
  elif args.port:
    distributed.initialize(
        f"127.0.0.1:{args.port}", args.num_processes, args.process_id, initialization_timeout=60
    )
  else:
    distributed.initialize(initialization_timeout=60)


# ---------------------------------------------------------------------------- collectives


def scenario_collectives(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from hyperx_jax import sharding  # pylint: disable=g-import-not-at-top
  from hyperx_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  start_runtime(args)
  mesh = make_mesh(tuple(options.get("mesh", (4, 2, 1))))
  batch_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  x_global, w_host = global_inputs()
  rows = host_rows(ROWS, jax.process_index(), jax.process_count())
  x = pipeline.make_global_batch({"x": x_global[rows]}, batch_sh)["x"]  # [ROWS, COLS]
  w = jax.device_put(w_host, repl)

  def loss_fn(w, x):
    return jnp.mean(jnp.tanh(x @ w) ** 2)

  @jax.jit
  def reductions(x, w):
    loss, grad = jax.value_and_grad(loss_fn)(w, x)
    return {"sum": x.sum(), "col_mean": x.mean(0), "loss": loss, "grad": grad}

  reduced = jax.jit(reductions, out_shardings=repl)(x, w)
  noise = jax.jit(lambda k: jax.random.normal(k, (ROWS, COLS)), out_shardings=batch_sh)(
      jax.random.key(7)
  )
  return {
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "global_shape": list(x.shape),
      # the rows each local device holds: [start, stop)
      "local_rows": sorted(
          [s.index[0].start or 0, s.index[0].stop or ROWS] for s in x.addressable_shards
      ),
      "gathered": fetch(x).tolist(),
      **{k: np.asarray(v.addressable_data(0)).tolist() for k, v in reduced.items()},
      "noise": fetch(noise).tolist(),
  }


# ----------------------------------------------------------------------------- checkpoint


def scenario_checkpoint(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from hyperx_jax import checkpoint, sharding  # pylint: disable=g-import-not-at-top

  start_runtime(args)
  mesh = make_mesh(tuple(options.get("mesh", (4, 2, 1))))
  x_global, w_host = global_inputs()
  by_rows = NamedSharding(mesh, P(("data", "fsdp"), "tensor"))  # every process: its rows
  by_cols = NamedSharding(mesh, P("fsdp", "tensor"))  # a different layout
  repl = sharding.replicated(mesh)
  x = jax.make_array_from_callback(x_global.shape, by_rows, lambda idx: x_global[idx])
  w = jax.make_array_from_callback(w_host.shape, by_cols, lambda idx: w_host[idx])
  tree = {"x": x, "w": w}
  root = pathlib.Path(options["directory"])

  # Plain orbax: two steps (the second doubles x), async, keep 2.
  manager = ocp.CheckpointManager(
      root / "orbax",
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True),
  )
  manager.save(1, args=ocp.args.StandardSave(tree))
  manager.save(2, args=ocp.args.StandardSave({"x": x * 2, "w": w}))
  manager.wait_until_finished()
  target = {
      "x": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
      "w": jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=repl),
  }
  latest = manager.latest_step()
  restored = manager.restore(latest, args=ocp.args.StandardRestore(target))
  manager.close()

  # The project's Checkpointer: trainable + optimiser state + RNG + data-iterator state.
  ckpt = checkpoint.Checkpointer(str(root / "run"), keep=2, async_save=True)
  rng = jax.random.key(3)
  data_state = {"step": 5, "streams": [1, 2, 3]}
  ckpt.save(5, trainable=tree, opt_state={"mu": x + 1}, rng=rng, data_state=data_state)
  ckpt.wait()
  by_fsdp = NamedSharding(mesh, P("fsdp"))
  mine = ckpt.restore(
      abstract_trainable=target,
      abstract_opt_state={"mu": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=by_fsdp)},
  )
  ckpt.close()
  return {
      "orbax_steps": sorted(int(s) for s in os.listdir(root / "orbax") if s.isdigit()),
      "orbax_latest": latest,
      "orbax_x": np.asarray(restored["x"].addressable_data(0)).tolist(),
      "orbax_x_sharding_replicated": restored["x"].sharding.is_fully_replicated,
      "orbax_w": fetch(restored["w"]).tolist(),
      "run_step": mine["step"],
      "run_x": np.asarray(mine["trainable"]["x"].addressable_data(0)).tolist(),
      "run_w": fetch(mine["trainable"]["w"]).tolist(),
      "run_mu": fetch(mine["opt_state"]["mu"]).tolist(),
      "run_rng_equal": bool(
          np.array_equal(jax.random.key_data(mine["rng"]), jax.random.key_data(rng))
      ),
      "run_data_state": mine["data_state"],
  }


# ---------------------------------------------------------------------------------- train


class WriteAudit:
  """Paths under `root` this process opened for writing or renamed a file to (Python-level;
  orbax writes through tensorstore and is checked separately)."""

  def __init__(self, root: pathlib.Path):
    self.root = str(root.resolve())
    self.paths: set[str] = set()
    sys.addaudithook(self._hook)

  def _hook(self, event: str, args: tuple) -> None:
    if event == "os.rename" and len(args) > 1:  # fileio.atomic_write: temporary -> the file
      event, args = "open", (args[1], "w")
    if event != "open" or not args or not isinstance(args[0], (str, os.PathLike)):
      return
    mode, flags = args[1] if len(args) > 1 else "r", args[2] if len(args) > 2 else 0
    writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    )
    path = os.path.abspath(os.fspath(args[0]))
    if writes and path.startswith(self.root + os.sep):
      self.paths.add(os.path.relpath(path, self.root))


class RecordingIterator:
  """Wraps the trainer's iterator: keeps this host's rows of every training batch. With
  `pause_after`, it writes `<out>/paused_<process>` after that many batches and sleeps
  `pause_s` (time for the test to signal every process while they are mid-run)."""

  def __init__(self, inner: Any, pause: Optional[tuple[int, float, pathlib.Path]] = None):
    self.inner = inner
    self.pause = pause
    self.records: list[dict[str, Any]] = []

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.inner)
    arrays = getattr(batch, "arrays", batch)
    self.records.append({k: np.asarray(v) for k, v in arrays.items()})
    if self.pause is not None and len(self.records) == self.pause[0]:
      _, seconds, marker = self.pause
      marker.write_text(str(len(self.records)))
      time.sleep(seconds)
    return batch

  def __getattr__(self, name: str):
    return getattr(self.inner, name)


def record_train_batches(
    pause: Optional[tuple[int, float, pathlib.Path]] = None,
) -> list[RecordingIterator]:
  """Patches the pipeline's builder so the trainer's iterator records what it yields."""
  from hyperx_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  made: list[RecordingIterator] = []
  build = pipeline.build_train_pipeline

  def recording_build(*args, **kwargs):
    made.append(RecordingIterator(build(*args, **kwargs), pause))
    return made[-1]

  pipeline.build_train_pipeline = recording_build
  return made


def entry_point_flags(args: argparse.Namespace, options: dict[str, Any]) -> list[str]:
  """Flags of `python -m hyperx_jax.main` for a tiny-config run of this process."""
  config_arg = ",".join(f"{k}={v}" for k, v in options["config_arg"].items())
  flags = [
      f"--config={TESTS_DIR.parent / 'configs' / 'tiny.py'}:{config_arg}",
      f"--workdir={options['workdir']}",
  ]
  flags += [f"--config.{k}={v}" for k, v in options.get("overrides", {}).items()]
  if args.num_processes > 1:
    flags += [
        f"--coordinator_address=127.0.0.1:{args.port}",
        f"--num_processes={args.num_processes}",
        f"--process_id={args.process_id}",
    ]
  return flags


def scenario_train(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
  """Runs the real entry point (hyperx_jax.main: flags, distributed start-up, the trainer)."""
  from hyperx_jax import cli
  from hyperx_jax import main as entry  # pylint: disable=g-import-not-at-top
  from hyperx_jax import train

  workdir = pathlib.Path(options["workdir"])
  workdir.mkdir(parents=True, exist_ok=True)
  audit = WriteAudit(workdir)
  pause = None
  if "pause_after" in options:
    pause = (
        options["pause_after"],
        options.get("pause_s", 3.0),
        args.out / f"paused_{args.process_id}",
    )
  iterators = record_train_batches(pause)
  outcome = {}
  train_and_evaluate = train.train_and_evaluate

  def keep_results(config, workdir, **kwargs):
    outcome["results"] = train_and_evaluate(config, workdir, **kwargs)
    return outcome["results"]

  train.train_and_evaluate = keep_results
  start = time.time()
  sys.argv = ["hyperx_jax.main", *entry_point_flags(args, options)]  # config overrides read it
  cli.invoke(entry, sys.argv[1:])
  seconds = time.time() - start
  records = iterators[0].records if iterators else []
  if records:
    np.savez(
        args.out / f"batches_{args.process_id}.npz",
        **{f"{i}/{k}": v for i, r in enumerate(records) for k, v in r.items()},
    )
  results = outcome.get("results")
  return {
      "completed": results is not None,
      "results": results,
      "seconds": seconds,
      "num_batches": len(records),
      "written": sorted(audit.paths),
  }


SCENARIOS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]]] = {
    "collectives": scenario_collectives,
    "checkpoint": scenario_checkpoint,
    "train": scenario_train,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("scenario", choices=sorted(SCENARIOS))
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--options", default="{}", help="scenario options as JSON")
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  if cache := os.environ.get("MULTIHOST_COMPILATION_CACHE"):
    # Runs of the same layout share compiled programs (one cache per process slot).
    jax.config.update(
        "jax_compilation_cache_dir",
        os.path.join(cache, f"{args.process_id}_of_{args.num_processes}"),
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  result = SCENARIOS[args.scenario](args, json.loads(args.options))
  result["process_index"] = jax.process_index()
  path = args.out / f"result_{args.process_id}.json"
  path.write_text(json.dumps(result, default=str))
  print(f"worker {args.process_id}: wrote {path}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
