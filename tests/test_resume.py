"""Exact resume: 2N steps straight == N steps, SIGTERM (save and exit), resume to 2N."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
# One CPU device compiles faster; the subprocesses need not share the 8 fake test devices.
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def main_command(ws, workdir: str, groups: int = 1) -> list[str]:
  """The tiny run; with G > 1 its saves are synchronous, so that the periodic checkpoint is on
  disk when the SIGKILL test kills it."""
  return [
      sys.executable,
      "-m",
      "hyperx_jax.main",
      f"--config={ROOT}/configs/tiny.py:workspace={ws},tasks=tag+pair,steps={STEPS}",
      f"--workdir={workdir}",
      f"--config.data.groups_per_batch={groups}",
      f"--config.checkpoint.async_save={groups == 1}",
  ]


def run_until_sigterm(ws, workdir: str, after_line: str, sig=signal.SIGTERM, groups=1) -> int:
  """Starts a run, sends `sig` once `after_line` is logged; returns the exit code. SIGTERM
  saves and exits cleanly; SIGKILL leaves the last periodic checkpoint."""
  proc = subprocess.Popen(
      main_command(ws, workdir, groups),
      cwd=ROOT,
      env=ENV,
      stderr=subprocess.PIPE,
      stdout=subprocess.DEVNULL,
      text=True,
  )
  lines = []
  try:
    for line in proc.stderr:
      lines.append(line)
      if after_line in line:
        proc.send_signal(sig)
        break
    _, rest = proc.communicate(timeout=600)
  finally:
    if proc.poll() is None:
      proc.kill()
  log = "".join(lines) + (rest or "")
  if sig == signal.SIGKILL:
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    return proc.returncode
  assert proc.returncode == 0, log[-3000:]
  assert "preempted: saved step" in log, log[-3000:]
  return proc.returncode


def final_trainable(workdir: str) -> dict[str, np.ndarray]:
  path = os.path.join(workdir, "checkpoints", str(STEPS), "trainable")
  tree = ocp.PyTreeCheckpointer().restore(path)
  flat = {}

  def visit(prefix, node):
    if isinstance(node, dict):
      for k, v in node.items():
        visit(f"{prefix}/{k}" if prefix else str(k), v)
    else:
      flat[prefix] = np.asarray(node)

  visit("", tree)
  return flat


@pytest.mark.parametrize(
    "groups,sig,after",
    [(1, signal.SIGTERM, f"step 5/{STEPS}"), (2, signal.SIGKILL, f"step 10/{STEPS}")],
)
def test_a_stopped_run_resumes_to_match_a_straight_run(workspace, tmp_path, groups, sig, after):
  """SIGTERM (save and exit) with one pair per batch; SIGKILL (no save: back to the last
  periodic checkpoint, step 6) with two languages per pair-task batch."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  subprocess.run(
      main_command(workspace, straight, groups),
      cwd=ROOT,
      env=ENV,
      check=True,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      timeout=600,
  )
  run_until_sigterm(workspace, resumed, after, sig, groups)
  steps = sorted(int(s) for s in os.listdir(os.path.join(resumed, "checkpoints")) if s.isdigit())
  assert steps and steps[-1] < STEPS, steps  # stopped part-way, with a checkpoint
  subprocess.run(
      main_command(workspace, resumed, groups),
      cwd=ROOT,
      env=ENV,
      check=True,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      timeout=600,
  )

  a, b = final_trainable(straight), final_trainable(resumed)
  assert a.keys() == b.keys() and a
  for name in a:
    np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
  with open(os.path.join(straight, "results.json")) as f:
    results_a = json.load(f)
  with open(os.path.join(resumed, "results.json")) as f:
    results_b = json.load(f)
  assert results_a == results_b
