"""Fault injection: a run killed, stopped or damaged at one exact place and then rerun with the
same command ends exactly as an uninterrupted run does.

Every run is `python -m hyperx_jax.main` in a subprocess on one CPU device: the tiny config, the
tagging task, 6 steps, checkpoints at steps 3 and 6, logs at 5 and 6. The faults are real
signals or real failing writes placed with HYPERX_FAULT (hyperx_jax/faults.py), or damage the
test does to a copy of a finished run. After each fault the same command is rerun; it must exit
0 with the final trainable parameters bitwise equal to the uninterrupted run's, the same
results.json, no temporary or half-written file and config.json unchanged. Runs share one
compilation cache, so only the first compiles; the scenarios run two at a time. `pytest -s`
prints a summary table.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Callable, Optional

import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 6
SUMMARY: list[tuple[str, ...]] = []


@dataclasses.dataclass
class Reference:
  """The uninterrupted run."""

  workdir: pathlib.Path
  trainable: dict[str, np.ndarray]
  results: dict
  config: str


@dataclasses.dataclass
class Snapshot:
  """A workdir right after a fault, before the rerun."""

  steps: list[int]  # committed checkpoint steps
  files: list[str]  # every path, relative to the workdir
  metrics: str  # metrics.jsonl
  config: Optional[str]  # config.json


@dataclasses.dataclass
class Outcome:
  scenario: Scenario
  workdir: pathlib.Path
  faulted: Optional[subprocess.CompletedProcess]  # None: damage done to a finished run
  after_fault: Snapshot
  rerun: subprocess.CompletedProcess


@dataclasses.dataclass(frozen=True)
class Scenario:
  fault: Optional[str] = None  # HYPERX_FAULT of the run that is interrupted
  returncode: int = 0  # that run's exit status (-9: SIGKILL)
  damage: Optional[Callable[[pathlib.Path], None]] = None  # instead: done to a finished copy


def truncate_latest_trainable(workdir: pathlib.Path) -> None:
  files = [
      p for p in (workdir / "checkpoints" / str(STEPS) / "trainable").rglob("*") if p.is_file()
  ]
  biggest = max(files, key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 2)


def corrupt_latest_data_state(workdir: pathlib.Path) -> None:
  path = workdir / "checkpoints" / str(STEPS) / "data_state" / "metadata"
  state = json.loads(path.read_text())
  state["positions"] = {"no-such-stream": 0}  # valid JSON that the iterator rejects
  path.write_text(json.dumps(state))


# test_<name> checks scenario <name>.
SCENARIOS = {
    "sigkill_during_a_train_step": Scenario("kill:train_step:6", -9),
    "sigkill_during_an_async_save": Scenario("kill:save_in_flight:6", -9),
    "sigkill_during_evaluation": Scenario("kill:eval:tag:bb", -9),
    "sigkill_while_results_are_written": Scenario("kill:write:results.md", -9),
    "sigterm": Scenario("term:train_step:4", 0),
    "full_disk_during_a_save": Scenario("disk_full:save_start:6", 1),
    "nan_loss": Scenario("nan:train_step:5", 1),
    "truncated_latest_checkpoint": Scenario(damage=truncate_latest_trainable),
    "corrupt_data_iterator_state": Scenario(damage=corrupt_latest_data_state),
}


@pytest.fixture(scope="module")
def runner(workspace, tmp_path_factory):  # noqa: F811
  """run(workdir, fault=None) -> CompletedProcess: the same command every time."""
  cache = tmp_path_factory.mktemp("xla_cache")
  env = {k: v for k, v in os.environ.items() if k != "HYPERX_FAULT"}
  env.update(
      XLA_FLAGS="--xla_force_host_platform_device_count=1",
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=str(cache),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  command = [
      sys.executable,
      "-m",
      "hyperx_jax.main",
      f"--config={ROOT}/configs/tiny.py:workspace={workspace},tasks=tag,steps={STEPS}",
  ]

  def run(workdir: pathlib.Path, fault: Optional[str] = None) -> subprocess.CompletedProcess:
    # stderr to a pipe, not a file: under disk_full a file could not grow.
    return subprocess.run(
        command + [f"--workdir={workdir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "HYPERX_FAULT": fault} if fault else env,
    )

  return run


@pytest.fixture(scope="module")
def reference(runner, tmp_path_factory) -> Reference:
  workdir = tmp_path_factory.mktemp("faults") / "reference"
  done = runner(workdir)
  assert done.returncode == 0, done.stderr[-3000:]
  yield Reference(
      workdir,
      final_trainable(workdir),
      read_json(workdir / "results.json"),
      (workdir / "config.json").read_text(),
  )
  if SUMMARY:
    header = ("fault", "injected", "rerun", "max |diff|", "results", "files left")
    print("\n" + "\n".join(" | ".join(row) for row in [header] + SUMMARY))


@pytest.fixture(scope="module")
def outcomes(request, runner, reference, tmp_path_factory) -> dict[str, Outcome]:
  """The selected scenarios, played two at a time (each: fault, snapshot, rerun)."""
  here = request.module.__name__
  selected = [
      name
      for name in SCENARIOS
      if any(
          item.module.__name__ == here and item.name == f"test_{name}"
          for item in request.session.items
      )
  ]
  root = tmp_path_factory.mktemp("scenarios")

  def play(name: str) -> Outcome:
    scenario, workdir = SCENARIOS[name], root / name
    faulted = None
    if scenario.damage:
      shutil.copytree(reference.workdir, workdir)
      scenario.damage(workdir)  # a finished run, damaged
    else:
      faulted = runner(workdir, scenario.fault)
    return Outcome(scenario, workdir, faulted, snapshot(workdir), runner(workdir))

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    return dict(zip(selected, pool.map(play, selected)))


def read_json(path: pathlib.Path):
  return json.loads(path.read_text())


def final_trainable(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  tree = ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / str(STEPS) / "trainable")
  flat = {}

  def visit(prefix: str, node) -> None:
    if isinstance(node, dict):
      for k, v in node.items():
        visit(f"{prefix}/{k}", v)
    else:
      flat[prefix] = np.asarray(node)

  visit("", tree)
  return flat


def finished_copy(ref: Reference, tmp_path: pathlib.Path) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(ref.workdir, workdir)
  return workdir


def contents(workdir: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(workdir)): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


def committed_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def snapshot(workdir: pathlib.Path) -> Snapshot:
  text = lambda name: (workdir / name).read_text() if (workdir / name).exists() else None
  return Snapshot(
      committed_steps(workdir),
      sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")),
      text("metrics.jsonl") or "",
      text("config.json"),
  )


def leftovers(workdir: pathlib.Path) -> list[str]:
  """Temporary files, orbax temporary directories and half-written JSON lines."""
  found = [
      str(p.relative_to(workdir))
      for p in workdir.rglob("*")
      if re.search(r"\.tmp-\d+$", p.name) or "orbax-checkpoint-tmp" in p.name
  ]
  metrics = workdir / "metrics.jsonl"
  for n, line in enumerate(metrics.read_text().split("\n")[:-1]):
    try:
      json.loads(line)
    except json.JSONDecodeError:
      found.append(f"metrics.jsonl line {n + 1}: {line[:60]!r}")
  return found


def what_the_rerun_did(log: str) -> str:
  resumed = re.search(r"resumed from \S+ at step (\d+)", log)
  did = f"resumed at step {resumed.group(1)}" if resumed else "started fresh"
  moved = dict.fromkeys(re.findall(r"/corrupt/(\d+)-", log))  # logged and warned: once each
  return did + "".join(f", moved step {s} aside" for s in moved)


def assert_like_reference(ref: Reference, o: Outcome, fault: str, where: str) -> None:
  """The fault happened as planned and the rerun finished as the uninterrupted run did."""
  if o.faulted is not None:
    assert o.faulted.returncode == o.scenario.returncode, o.faulted.stderr[-3000:]
  assert o.after_fault.config == ref.config  # the faulted run's, the same command's
  assert o.rerun.returncode == 0, o.rerun.stderr[-3000:]
  trainable = final_trainable(o.workdir)
  assert trainable.keys() == ref.trainable.keys() and trainable
  diff = max(float(np.max(np.abs(trainable[k] - ref.trainable[k]))) for k in trainable)
  for name, value in trainable.items():
    np.testing.assert_array_equal(value, ref.trainable[name], err_msg=name)
  assert read_json(o.workdir / "results.json") == ref.results
  assert leftovers(o.workdir) == []
  assert (o.workdir / "config.json").read_text() == o.after_fault.config
  SUMMARY.append((fault, where, what_the_rerun_did(o.rerun.stderr), f"{diff:.1e}", "equal", "none"))


# --------------------------------------------------------------------- kills and signals


def test_sigkill_during_a_train_step(outcomes, reference):
  o = outcomes["sigkill_during_a_train_step"]
  assert_like_reference(reference, o, "SIGKILL", "train step 6 (dispatched, not kept)")
  # Flushed at the step-5 log: the kill lost only the interval in progress.
  assert [json.loads(line)["step"] for line in o.after_fault.metrics.splitlines()] == [5]


def test_sigkill_during_an_async_save(outcomes, reference):
  o = outcomes["sigkill_during_an_async_save"]
  assert_like_reference(reference, o, "SIGKILL", "async save of step 6, before its commit")
  assert STEPS not in o.after_fault.steps  # killed before the save was committed
  assert any("orbax-checkpoint-tmp" in f for f in o.after_fault.files)


def test_sigkill_during_evaluation(outcomes, reference):
  o = outcomes["sigkill_during_evaluation"]
  assert_like_reference(reference, o, "SIGKILL", "final evaluation, before pair tag:bb")
  assert o.after_fault.steps[-1] == STEPS and "results.json" not in o.after_fault.files
  assert what_the_rerun_did(o.rerun.stderr) == f"resumed at step {STEPS}"  # no training


def test_sigkill_while_results_are_written(outcomes, reference):
  o = outcomes["sigkill_while_results_are_written"]
  assert_like_reference(reference, o, "SIGKILL", "results.md in its temporary, not renamed")
  files = o.after_fault.files
  assert "results.json" in files and "results.md" not in files  # json renamed into place
  assert any(re.fullmatch(r"\.results\.md\.tmp-\d+", f) for f in files)  # the kill's temporary


def test_sigterm(outcomes, reference):
  o = outcomes["sigterm"]
  assert_like_reference(reference, o, "SIGTERM", "train step 4")
  assert "preempted: saved step 4" in o.faulted.stderr and 4 in o.after_fault.steps
  assert what_the_rerun_did(o.rerun.stderr) == "resumed at step 4"


# --------------------------------------------------------------------- damaged checkpoints


def test_truncated_latest_checkpoint(outcomes, reference):
  o = outcomes["truncated_latest_checkpoint"]
  assert_like_reference(
      reference,
      o,
      "truncated checkpoint",
      f"largest file of checkpoints/{STEPS}/trainable cut in half",
  )
  assert what_the_rerun_did(o.rerun.stderr) == f"resumed at step 3, moved step {STEPS} aside"
  (moved,) = (o.workdir / "checkpoints" / "corrupt").iterdir()
  assert moved.name.startswith(f"{STEPS}-") and committed_steps(o.workdir) == [3, STEPS]


def test_corrupt_data_iterator_state(outcomes, reference):
  o = outcomes["corrupt_data_iterator_state"]
  assert_like_reference(
      reference,
      o,
      "corrupt data-iterator state",
      f"checkpoints/{STEPS}/data_state names an unknown stream",
  )
  assert what_the_rerun_did(o.rerun.stderr) == f"resumed at step 3, moved step {STEPS} aside"


def test_evaluate_refuses_an_unreadable_latest_step(reference, tmp_path):
  """(allow_fallback itself: tests/test_checkpoint.py.)"""
  from hyperx_jax import checkpoint, evaluate

  workdir = finished_copy(reference, tmp_path)
  truncate_latest_trainable(workdir)
  before = contents(workdir)
  with pytest.raises(
      checkpoint.UnreadableCheckpointError, match=f"(?s)step {STEPS} .*unreadable.*--allow_fallback"
  ):
    evaluate.evaluate_checkpoint(str(workdir))
  assert contents(workdir) == before  # read-only: nothing moved, results.json untouched


# --------------------------------------------------------------------- failing writes, NaN


def test_full_disk_during_a_save(outcomes, reference):
  o = outcomes["full_disk_during_a_save"]
  assert_like_reference(
      reference, o, "full disk (EFBIG)", f"every write from the save of step {STEPS} on"
  )
  assert "File too large" in o.faulted.stderr
  assert STEPS not in o.after_fault.steps and "results.json" not in o.after_fault.files
  assert not [f for f in o.after_fault.files if f.startswith(".results")]  # cleaned up


def test_nan_loss(outcomes, reference):
  o = outcomes["nan_loss"]
  assert_like_reference(reference, o, "NaN loss", "train step 5")
  assert "NonFiniteError" in o.faulted.stderr and o.after_fault.steps == [3]
  assert what_the_rerun_did(o.rerun.stderr) == "resumed at step 3"


# --------------------------------------------------------------------- failing runs


def test_a_changed_config_is_refused_and_changes_nothing(reference, tmp_path):
  from hyperx_jax import run, train
  from hyperx_jax.config import ConfigError

  workdir = finished_copy(reference, tmp_path)
  before = contents(workdir)
  config = run.load_config(str(workdir))
  config.total_steps = 8  # allowed: config.changes.RESUMABLE_CHANGES
  config.optim.lr = 0.5
  config.eval_streams[0]["lang"] = "cc"
  with pytest.raises(ConfigError) as error:
    train.Trainer(config, str(workdir))
  message = str(error.value)
  assert "config.optim.lr: 0.01" in message and "config.eval_streams[0].lang" in message
  assert "config.total_steps" not in message and "--allow_config_change" in message
  assert contents(workdir) == before


def test_a_run_failing_on_bad_input_changes_nothing(reference, tmp_path):
  from hyperx_jax import run, train

  workdir = finished_copy(reference, tmp_path)
  before = contents(workdir)
  bad = tmp_path / "bad_test.iob2"
  bad.write_text("w1\tT0\textra column\n")
  config = run.load_config(str(workdir))
  config.eval_streams[0]["source"]["path"] = str(bad)
  with pytest.raises(ValueError, match="bad_test.iob2"):
    train.Trainer(config, str(workdir), allow_config_change=True)
  assert contents(workdir) == before
