"""Multi-host code paths, proven with several jax processes on localhost (DESIGN.md §3).

Each test starts tests/multihost_worker.py as N processes with 8/N fake CPU devices each; with
N > 1 they form one 8-device runtime through hyperx_jax.distributed.initialize (coordinator on a
free localhost port, gloo collectives). The harness (`run_processes`) gives every process its own
log file, kills the others when one fails or the time runs out, and fails with every process's
log tail. Expected values come from numpy, from this (single-process) pytest process, or from a
one-process x 8-device run of the same worker.
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
import numpy as np
import pytest

import multihost_worker as worker

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
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(TESTS_DIR),
                                                    env.get("PYTHONPATH")]))
  env["TOKENIZERS_PARALLELISM"] = "false"
  env["PYTHONUNBUFFERED"] = "1"
  return env


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
    parts.append(f"--- process {w.process_id} (exit code {w.popen.returncode}), log {w.log} "
                 f"(last {LOG_TAIL_LINES} lines) ---\n{w.tail()}")
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


def run_processes(scenario: str, out: pathlib.Path, *, num_processes: int = 2,
                  options: Optional[dict[str, Any]] = None, timeout_s: float = 240,
                  watch: Optional[Callable[[Sequence[Worker]], None]] = None
                  ) -> list[dict[str, Any]]:
  """Runs `scenario` as `num_processes` workers sharing 8 devices; returns their results
  (result_<i>.json, by process id). `watch(workers)` is called while they run (e.g. to send a
  signal). Raises ProcessGroupError, with every log tail, when a worker fails or hangs."""
  out.mkdir(parents=True, exist_ok=True)
  env = process_env(TOTAL_DEVICES // num_processes)
  port = free_port()
  workers: list[Worker] = []
  try:
    for i in range(num_processes):
      log = out / f"log_{i}.txt"
      cmd = [sys.executable, str(WORKER), scenario, f"--process_id={i}",
             f"--num_processes={num_processes}", f"--port={port}", f"--out={out}",
             f"--options={json.dumps(options or {})}"]
      with open(log, "w") as f:
        workers.append(Worker(i, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f,
                                                  stderr=subprocess.STDOUT), log))
    _wait(workers, time.monotonic() + timeout_s, watch)
  finally:
    _stop(workers)
  results = []
  for w in workers:
    path = out / f"result_{w.process_id}.json"
    if not path.exists():
      raise ProcessGroupError(_describe(workers, f"{scenario}: {path} was not written"))
    results.append(json.loads(path.read_text()))
  return results


def _wait(workers: Sequence[Worker], deadline: float,
          watch: Optional[Callable[[Sequence[Worker]], None]]) -> None:
  failed_at = None
  while any(w.popen.poll() is None for w in workers):
    now = time.monotonic()
    failed = [w for w in workers if w.popen.returncode not in (None, 0)]
    if failed and failed_at is None:
      failed_at = now
    if failed_at is not None and now - failed_at > FAILURE_GRACE_S:
      _stop(workers)
      raise ProcessGroupError(_describe(
          workers, f"process {failed[0].process_id} failed; the others were killed"))
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
    run_processes("checkpoint", tmp_path, options={"mesh": [4, 2, 1]}, timeout_s=120,
                  watch=lambda ws: ws[1].popen.poll() is None and ws[1].popen.kill())
  message = str(info.value)
  assert "process 1" in message and "--- process 0" in message and "--- process 1" in message
  assert time.monotonic() - start < 60


# ----------------------------------------------------------------- a small jitted program


@pytest.fixture(scope="module")
def collectives(tmp_path_factory) -> list[dict[str, Any]]:
  return run_processes("collectives", tmp_path_factory.mktemp("collectives"),
                       options={"mesh": [4, 2, 1]})


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
    assert r["local_rows"] == [[s, s + per_device]
                               for s in range(host.start, host.stop, per_device)]
    np.testing.assert_array_equal(np.asarray(r["gathered"], np.float32), x)


def test_jitted_reductions_and_gradient_match_numpy_on_every_host(collectives):
  x, w = worker.global_inputs()
  x64, w64 = x.astype(np.float64), w.astype(np.float64)
  t = np.tanh(x64 @ w64)
  expected = {"sum": x64.sum(), "col_mean": x64.mean(0), "loss": np.mean(t ** 2),
              # d/dw mean(tanh(xw)^2) = x^T (2 t (1 - t^2)) / (rows * out)
              "grad": x64.T @ (2 * t * (1 - t ** 2)) / t.size}
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
  results = run_processes("checkpoint", root / "out",
                          options={"mesh": [4, 2, 1], "directory": str(root / "ckpt")})
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
    assert r["run_data_state"] == {"step": 5, "process_independent": [1, 2, 3]}


def test_multiprocess_checkpoint_reads_back_in_a_single_process(checkpoints):
  # Every shard landed on disk: this one process (8 local devices) reads the whole arrays.
  import orbax.checkpoint as ocp
  _, root = checkpoints
  x, w = worker.global_inputs()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {"x": jax.ShapeDtypeStruct(x.shape, np.float32, sharding=device),
            "w": jax.ShapeDtypeStruct(w.shape, np.float32, sharding=device)}
  with ocp.CheckpointManager(root / "orbax") as manager:
    restored = manager.restore(1, args=ocp.args.StandardRestore(target))
  np.testing.assert_array_equal(np.asarray(restored["x"]), x)
  np.testing.assert_array_equal(np.asarray(restored["w"]), w)
