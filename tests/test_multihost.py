"""Multi-host code paths, proven with several jax processes on localhost.

Each test starts tests/multihost_worker.py as N processes with 8/N fake CPU devices each; with
N > 1 they form one 8-device runtime through hyperx_jax.distributed.initialize (coordinator on a
free localhost port, gloo collectives). The harness (`ProcessGroup`, `run_processes`) gives
every process its own log file, kills the others when one fails or the time runs out, and fails
with every process's log tail. Expected values come from numpy, from this (single-process)
pytest process, or from a one-process x 8-device run of the same worker.

The trainer tests run `python -m hyperx_jax.main` on the tiny config (tiny random XLM-R, local
files, dropout on, a (4, 2, 1) mesh) for 2N steps: two processes x 4 devices against one x 8
(loss at every step, final trainable parameters, each host's rows of every batch, which
process writes what), and a two-process run stopped by SIGTERM to both and resumed against the
uninterrupted one. Compiled programs are cached between the runs of one module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import multihost_worker as worker
import numpy as np
import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
WORKER = TESTS_DIR / "multihost_worker.py"
TOTAL_DEVICES = 8
FAILURE_GRACE_S = 5.0  # a failed process's peers block in collectives: kill them after this
LOG_TAIL_LINES = 60


# -------------------------------------------------------------------------------- harness


def free_port() -> int:
  """A TCP port free on 127.0.0.1 right now (the coordinator binds it a moment later)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(devices: int) -> dict[str, str]:
  """The parent's environment with `devices` fake CPU devices, the repo importable, and no
  proxy variables (gRPC would route the localhost coordinator through them)."""
  env = {k: v for k, v in os.environ.items() if "_proxy" not in k.lower()}
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{flags.strip()} --xla_force_host_platform_device_count={devices}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(
      filter(None, [str(REPO), str(TESTS_DIR), env.get("PYTHONPATH")])
  )
  env["TOKENIZERS_PARALLELISM"] = "false"
  env["PYTHONUNBUFFERED"] = "1"
  return env


# Generous: a loaded 2-core machine compiles the trainer several times slower than an idle one.
JOIN_TIMEOUT_S = 900


@dataclasses.dataclass
class Worker:
  process_id: int
  popen: subprocess.Popen
  log: pathlib.Path

  def tail(self) -> str:
    lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


class ProcessGroupError(AssertionError):
  """A worker failed, hung or was killed; the message holds every worker's log tail."""


def _describe(workers: Sequence[Worker], why: str) -> str:
  parts = [why]
  for w in workers:
    parts.append(
        f"--- process {w.process_id} (exit code {w.popen.returncode}), log {w.log} "
        f"(last {LOG_TAIL_LINES} lines) ---\n{w.tail()}"
    )
  return "\n".join(parts)


def _stop(workers: Sequence[Worker]) -> None:
  """Kills the workers still running (only the processes started here) and reaps them."""
  for w in workers:
    if w.popen.poll() is None:
      w.popen.kill()
  for w in workers:
    try:
      w.popen.wait(timeout=30)
    except subprocess.TimeoutExpired:
      pass


class ProcessGroup:
  """`num_processes` workers of one scenario sharing 8 devices, started at construction;
  `join()` waits for them and returns their results. With `coordinator_from_env` the workers
  find the coordinator through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
  instead of --port."""

  def __init__(
      self,
      scenario: str,
      out: pathlib.Path,
      *,
      num_processes: int = 2,
      options: Optional[dict[str, Any]] = None,
      compilation_cache: Optional[pathlib.Path] = None,
      coordinator_from_env: bool = False,
  ):
    self.scenario, self.out = scenario, out
    self.started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    env = process_env(TOTAL_DEVICES // num_processes)
    if compilation_cache is not None:
      env["MULTIHOST_COMPILATION_CACHE"] = str(compilation_cache)
    port = free_port()
    self.workers: list[Worker] = []
    try:
      for i in range(num_processes):
        env_i = dict(env)
        if coordinator_from_env:
          env_i.update(
              {
                  "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                  "JAX_NUM_PROCESSES": str(num_processes),
                  "JAX_PROCESS_ID": str(i),
              }
          )
        cmd = [
            sys.executable,
            str(WORKER),
            scenario,
            f"--process_id={i}",
            f"--num_processes={num_processes}",
            f"--port={0 if coordinator_from_env else port}",
            f"--out={out}",
            f"--options={json.dumps(options or {})}",
        ]
        log = out / f"log_{i}.txt"
        with open(log, "w") as f:
          self.workers.append(
              Worker(
                  i,
                  subprocess.Popen(cmd, cwd=REPO, env=env_i, stdout=f, stderr=subprocess.STDOUT),
                  log,
              )
          )
    except BaseException:
      self.stop()
      raise

  def stop(self) -> None:
    _stop(self.workers)

  def join(
      self,
      timeout_s: float = JOIN_TIMEOUT_S,
      watch: Optional[Callable[[Sequence[Worker]], None]] = None,
  ) -> list[dict[str, Any]]:
    """Waits (up to `timeout_s` after the start) calling `watch(workers)` meanwhile (e.g. to
    send a signal); returns result_<i>.json by process id. Raises ProcessGroupError, with
    every log tail, when a worker fails or hangs."""
    try:
      _wait(self.workers, self.started + timeout_s, watch)
    finally:
      self.stop()
    results = []
    for w in self.workers:
      path = self.out / f"result_{w.process_id}.json"
      if not path.exists():
        raise ProcessGroupError(_describe(self.workers, f"{self.scenario}: {path} was not written"))
      results.append(json.loads(path.read_text()))
    return results


def run_processes(
    scenario: str,
    out: pathlib.Path,
    *,
    timeout_s: float = JOIN_TIMEOUT_S,
    watch: Optional[Callable[[Sequence[Worker]], None]] = None,
    **kwargs,
) -> list[dict[str, Any]]:
  """Starts a ProcessGroup and joins it."""
  return ProcessGroup(scenario, out, **kwargs).join(timeout_s, watch)


def _wait(
    workers: Sequence[Worker], deadline: float, watch: Optional[Callable[[Sequence[Worker]], None]]
) -> None:
  failed_at = None
  while any(w.popen.poll() is None for w in workers):
    now = time.monotonic()
    failed = [w for w in workers if w.popen.returncode not in (None, 0)]
    if failed and failed_at is None:
      failed_at = now
    if failed_at is not None and now - failed_at > FAILURE_GRACE_S:
      _stop(workers)
      raise ProcessGroupError(
          _describe(workers, f"process {failed[0].process_id} failed; the others were killed")
      )
    if now > deadline:
      _stop(workers)
      raise ProcessGroupError(_describe(workers, "timed out; every process was killed"))
    if watch is not None and not failed:
      watch(workers)
    time.sleep(0.1)
  failed = [w for w in workers if w.popen.returncode != 0]
  if failed:
    raise ProcessGroupError(_describe(workers, f"process {failed[0].process_id} failed"))


# ------------------------------------------------------------------- the harness itself


def test_harness_reports_a_failed_process_and_kills_its_peer(tmp_path):
  # Process 1 is killed at start-up; process 0 then waits for its peer in vain.
  start = time.monotonic()
  with pytest.raises(ProcessGroupError) as info:
    run_processes(
        "checkpoint",
        tmp_path,
        options={"mesh": [4, 2, 1]},
        timeout_s=120,
        watch=lambda ws: ws[1].popen.poll() is None and ws[1].popen.kill(),
    )
  message = str(info.value)
  assert "process 1" in message and "--- process 0" in message and "--- process 1" in message
  assert time.monotonic() - start < 60


def test_initialize_refuses_incomplete_multiprocess_settings(monkeypatch):
  from hyperx_jax import distributed

  for name in (
      distributed.ENV_COORDINATOR,
      distributed.ENV_NUM_PROCESSES,
      distributed.ENV_PROCESS_ID,
  ):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "detected_cluster", lambda: None)  # a plain machine
  with pytest.raises(ValueError, match="without a coordinator address"):
    distributed.initialize(num_processes=2, process_id=1)
  with pytest.raises(ValueError, match="needs process_id"):
    distributed.initialize("127.0.0.1:1", num_processes=2)
  with pytest.raises(ValueError, match=r"process_id=2 is not in \[0, num_processes=2\)"):
    distributed.initialize("127.0.0.1:1", 2, 2)
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
    distributed.initialize()
  monkeypatch.delenv(distributed.ENV_NUM_PROCESSES)
  assert distributed.initialize() is False  # one process: nothing to start
  assert not jax.distributed.is_initialized()


# ----------------------------------------------------------------- a small jitted program


@pytest.fixture(scope="module")
def collectives(tmp_path_factory) -> list[dict[str, Any]]:
  return run_processes(
      "collectives", tmp_path_factory.mktemp("collectives"), options={"mesh": [4, 2, 1]}
  )


def test_two_processes_form_one_eight_device_runtime(collectives):
  for i, r in enumerate(collectives):
    assert (r["process_index"], r["process_count"]) == (i, 2)
    assert (r["device_count"], r["local_device_count"]) == (8, 4)


def test_global_batch_is_built_from_each_hosts_rows(collectives):
  x, _ = worker.global_inputs()
  per_device = worker.ROWS // TOTAL_DEVICES
  for i, r in enumerate(collectives):
    assert r["global_shape"] == [worker.ROWS, worker.COLS]
    host = worker.host_rows(worker.ROWS, i, 2)
    assert r["local_rows"] == [
        [s, s + per_device] for s in range(host.start, host.stop, per_device)
    ]
    np.testing.assert_array_equal(np.asarray(r["gathered"], np.float32), x)


def test_jitted_reductions_and_gradient_match_numpy_on_every_host(collectives):
  x, w = worker.global_inputs()
  x64, w64 = x.astype(np.float64), w.astype(np.float64)
  t = np.tanh(x64 @ w64)
  expected = {
      "sum": x64.sum(),
      "col_mean": x64.mean(0),
      "loss": np.mean(t**2),
      # d/dw mean(tanh(xw)^2) = x^T (2 t (1 - t^2)) / (rows * out)
      "grad": x64.T @ (2 * t * (1 - t**2)) / t.size,
  }
  for r in collectives:
    for key, value in expected.items():
      np.testing.assert_allclose(np.asarray(r[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)
  for key in expected:
    assert collectives[0][key] == collectives[1][key], f"{key} differs between the processes"


def test_random_bits_do_not_depend_on_the_process_layout(collectives):
  # jax_threefry_partitionable: sharded generation across two processes equals a local draw.
  local = np.asarray(jax.random.normal(jax.random.key(7), (worker.ROWS, worker.COLS)))
  for r in collectives:
    np.testing.assert_array_equal(np.asarray(r["noise"], np.float32), local)


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[list[dict[str, Any]], pathlib.Path]:
  root = tmp_path_factory.mktemp("multihost_ckpt")
  results = run_processes(
      "checkpoint",
      root / "out",
      coordinator_from_env=True,
      options={"mesh": [4, 2, 1], "directory": str(root / "ckpt")},
  )
  return results, root / "ckpt"


def test_checkpoint_written_by_both_processes_restores_in_other_shardings(checkpoints):
  results, _ = checkpoints
  x, w = worker.global_inputs()
  for r in results:
    assert (r["orbax_steps"], r["orbax_latest"]) == ([1, 2], 2)
    assert r["orbax_x_sharding_replicated"]
    np.testing.assert_array_equal(np.asarray(r["orbax_x"], np.float32), 2 * x)
    np.testing.assert_array_equal(np.asarray(r["orbax_w"], np.float32), w)
    assert r["run_step"] == 5 and r["run_rng_equal"]
    np.testing.assert_array_equal(np.asarray(r["run_x"], np.float32), x)
    np.testing.assert_array_equal(np.asarray(r["run_w"], np.float32), w)
    np.testing.assert_array_equal(np.asarray(r["run_mu"], np.float32), x + 1)
    assert r["run_data_state"] == {"step": 5, "streams": [1, 2, 3]}


def test_multiprocess_checkpoint_reads_back_in_a_single_process(checkpoints):
  # Every shard landed on disk: this one process (8 local devices) reads the whole arrays.
  import orbax.checkpoint as ocp

  _, root = checkpoints
  x, w = worker.global_inputs()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {
      "x": jax.ShapeDtypeStruct(x.shape, np.float32, sharding=device),
      "w": jax.ShapeDtypeStruct(w.shape, np.float32, sharding=device),
  }
  with ocp.CheckpointManager(root / "orbax") as manager:
    restored = manager.restore(1, args=ocp.args.StandardRestore(target))
  np.testing.assert_array_equal(np.asarray(restored["x"]), x)
  np.testing.assert_array_equal(np.asarray(restored["w"]), w)


# ------------------------------------------------------------------------- the trainer

HALF_STEPS = 4  # N: the stopped run stops near N, every run ends at 2N
TRAIN_TIMEOUT_S = 600  # generous: two cold compiles on two shared cores


@dataclasses.dataclass
class TrainRun:
  """One training run of the worker (`python -m hyperx_jax.main` in every process)."""

  workdir: pathlib.Path
  out: pathlib.Path
  group: ProcessGroup
  results: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  def join(self, watch: Optional[Callable[[Sequence[Worker]], None]] = None) -> TrainRun:
    self.results = self.group.join(TRAIN_TIMEOUT_S, watch)
    return self

  def batches(self, process: int) -> list[dict[str, np.ndarray]]:
    """This process's rows of each training batch it drew, in order."""
    with np.load(self.out / f"batches_{process}.npz") as f:
      steps: dict[int, dict[str, np.ndarray]] = {}
      for name in f.files:
        step, key = name.split("/", 1)
        steps.setdefault(int(step), {})[key] = f[name]
    return [steps[i] for i in sorted(steps)]


def train_options(workspace: pathlib.Path, workdir: pathlib.Path, **extra) -> dict[str, Any]:
  """The tiny config (two pair streams, dropout on), a (4, 2, 1) mesh, a loss every step and
  a checkpoint every N steps."""
  return {
      "workdir": str(workdir),
      "config_arg": {
          "workspace": str(workspace),
          "tasks": "pair",
          "steps": 2 * HALF_STEPS,
          "batch": 8,
          "mesh": "-1+2+1",
      },
      "overrides": {"log_every_steps": 1, "checkpoint.every_steps": HALF_STEPS},
      **extra,
  }


def start_training(
    root: pathlib.Path,
    name: str,
    workspace: pathlib.Path,
    num_processes: int,
    workdir: Optional[pathlib.Path] = None,
    **extra,
) -> TrainRun:
  """Starts a run in `workdir` (default: a fresh one); compiled programs are cached under
  `root` for the runs after it."""
  workdir = workdir or root / f"{name}_workdir"
  out = root / f"{name}_out"
  group = ProcessGroup(
      "train",
      out,
      num_processes=num_processes,
      options=train_options(workspace, workdir, **extra),
      compilation_cache=root / "compilation_cache",
  )
  return TrainRun(workdir, out, group)


def loss_curve(workdir: pathlib.Path) -> dict[int, float]:
  """step -> training loss from metrics.jsonl (the last line wins for a step logged twice)."""
  curve = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "loss" in record["scalars"]:
      curve[record["step"]] = record["scalars"]["loss"]
  return curve


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def trainable_params(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """The checkpointed trainable parameters, read in full by this single process."""
  import orbax.checkpoint as ocp

  path = workdir / "checkpoints" / str(step) / "trainable"
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(path)
    tree = getattr(meta, "item_metadata", None) or meta
    tree = getattr(tree, "tree", tree)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    restored = ckpt.restore(path, target)
  return {
      jax.tree_util.keystr(p): np.asarray(v)
      for p, v in jax.tree_util.tree_flatten_with_path(restored)[0]
  }


def assert_params_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float):
  assert sorted(a) == sorted(b)
  worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
  assert worst <= atol, f"trainable parameters differ by up to {worst:g} (> {atol:g})"


@pytest.fixture(scope="module")
def train_root(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("multihost_train")


@pytest.fixture(scope="module")
def train_workspace(train_root) -> pathlib.Path:
  from helpers import make_workspace

  return make_workspace(train_root / "workspace")


@pytest.fixture(scope="module")
def baseline_runs(train_root, train_workspace) -> tuple[TrainRun, TrainRun]:
  """One process x 8 devices and two x 4, side by side (their cold compiles overlap)."""
  runs = [
      start_training(train_root, "one_process", train_workspace, 1),
      start_training(train_root, "two_processes", train_workspace, 2),
  ]
  try:
    return tuple(run.join() for run in runs)
  finally:
    for run in runs:
      run.group.stop()


@pytest.fixture(scope="module")
def one_process(baseline_runs) -> TrainRun:
  return baseline_runs[0]


@pytest.fixture(scope="module")
def two_processes(baseline_runs) -> TrainRun:
  return baseline_runs[1]


def test_two_processes_match_one_process_loss_curve_and_parameters(one_process, two_processes):
  steps = list(range(1, 2 * HALF_STEPS + 1))
  reference, curve = loss_curve(one_process.workdir), loss_curve(two_processes.workdir)
  assert sorted(reference) == sorted(curve) == steps
  np.testing.assert_allclose(
      [curve[s] for s in steps], [reference[s] for s in steps], rtol=0, atol=1e-5
  )
  assert checkpoint_steps(two_processes.workdir) == [HALF_STEPS, 2 * HALF_STEPS]
  assert_params_close(
      trainable_params(two_processes.workdir, 2 * HALF_STEPS),
      trainable_params(one_process.workdir, 2 * HALF_STEPS),
      atol=1e-5,
  )
  assert all(r["completed"] for r in two_processes.results)
  assert two_processes.results[0]["results"] == two_processes.results[1]["results"]


def test_every_host_draws_the_same_stream_and_reads_only_its_rows(one_process, two_processes):
  reference = one_process.batches(0)
  hosts = [two_processes.batches(p) for p in (0, 1)]
  assert len(reference) == len(hosts[0]) == len(hosts[1]) == 2 * HALF_STEPS
  assert len({int(b["lang_id"][0]) for b in reference}) == 2, "both pair streams drawn"
  for step, full in enumerate(reference):
    for key, rows in full.items():
      local = [h[step][key] for h in hosts]
      assert local[0].shape[0] == local[1].shape[0] == rows.shape[0] // 2, key
      np.testing.assert_array_equal(np.concatenate(local), rows, err_msg=f"step {step} {key}")


def test_only_process_zero_writes_logs_and_tables(two_processes):
  written = [set(r["written"]) for r in two_processes.results]
  outside_checkpoints = [{p for p in w if not p.startswith("checkpoints")} for w in written]
  assert outside_checkpoints[1] == set(), f"process 1 wrote {sorted(outside_checkpoints[1])}"
  assert {"metrics.jsonl", "config.json"} <= outside_checkpoints[0]
  names = {p.name for p in two_processes.workdir.iterdir()}
  assert {"results.json", "results.md", "results.csv", "metrics.jsonl"} <= names
  assert len([n for n in names if n.startswith("events.out.tfevents")]) == 1
  # Orbax checkpoints are written by both: each process records its own shards' metadata.
  for p, w in enumerate(written):
    assert any(f"array_metadatas/process_{p}" in path for path in w), f"process {p}"


def test_sigterm_to_both_then_resume_matches_an_uninterrupted_run(
    train_root, train_workspace, two_processes
):
  stopped_out = train_root / "preempted_out"
  signalled = []

  def sigterm_both_when_paused(workers: Sequence[Worker]) -> None:
    if not signalled and all((stopped_out / f"paused_{w.process_id}").exists() for w in workers):
      for w in workers:
        w.popen.send_signal(signal.SIGTERM)
      signalled.append(True)

  stopped = start_training(
      train_root, "preempted", train_workspace, 2, pause_after=HALF_STEPS + 1, pause_s=3.0
  )
  stopped.join(watch=sigterm_both_when_paused)
  assert signalled and not any(r["completed"] for r in stopped.results)
  # Paused in step N + 1, signalled there: the save on preemption is an extra checkpoint.
  stop_step = checkpoint_steps(stopped.workdir)[-1]
  assert HALF_STEPS < stop_step < 2 * HALF_STEPS, f"stopped at {stop_step}"
  assert checkpoint_steps(stopped.workdir) == [HALF_STEPS, stop_step]

  resumed = start_training(
      train_root, "resumed", train_workspace, 2, workdir=stopped.workdir
  ).join()
  assert all(r["completed"] for r in resumed.results)
  # The data iterators continued where they stopped: the same rows as the uninterrupted run.
  for p in (0, 1):
    after = resumed.batches(p)
    assert len(after) == 2 * HALF_STEPS - stop_step
    for got, want in zip(after, two_processes.batches(p)[stop_step:]):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"process {p} {key}")
  steps = list(range(1, 2 * HALF_STEPS + 1))
  curve, reference = loss_curve(stopped.workdir), loss_curve(two_processes.workdir)
  assert sorted(curve) == steps
  np.testing.assert_allclose(
      [curve[s] for s in steps], [reference[s] for s in steps], rtol=0, atol=1e-5
  )
  assert_params_close(
      trainable_params(stopped.workdir, 2 * HALF_STEPS),
      trainable_params(two_processes.workdir, 2 * HALF_STEPS),
      atol=1e-5,
  )
