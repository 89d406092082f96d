"""A tiny run through the CLI, as a user sees it: the console (a compile line per compiled
function, no other library's INFO lines, a rate from the first progress line), results.json's
provenance checked against the run directory and git, the config in the TensorBoard event file,
and `python -m hyperx_jax.evaluate` writing to its own directory."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pty
import re
import subprocess
import sys

import pytest

import hyperx_jax

from helpers import read_events

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 10
COMPILE_LINE = r"compiling {} step \(task {}\) … done in \d+\.\d s"
# an INFO line of another library, as the console shows it with --verbose (warnings say WARNING:)
LIBRARY_INFO = re.compile(r"^\d\d:\d\d:\d\d ([\w.]+\.py):\d+ ", re.M)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
  cache = tmp_path_factory.mktemp("xla_cache")  # the evaluate runs reuse the run's executables
  return {
      **os.environ,
      "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
      "JAX_PLATFORMS": "cpu",
      "JAX_COMPILATION_CACHE_DIR": str(cache),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }


def cli(env, module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", module, *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )


@pytest.fixture(scope="module")
def tiny_run(workspace, env, tmp_path_factory):  # noqa: F811
  workdir = tmp_path_factory.mktemp("console") / "run"
  done = cli(
      env,
      "hyperx_jax.main",
      f"--config={ROOT}/configs/tiny.py:workspace={workspace},tasks=tag,steps={STEPS}",
      f"--workdir={workdir}",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done.stderr


def library_info_sources(console: str) -> set[str]:
  return set(LIBRARY_INFO.findall(console))


def test_console_has_compile_lines_a_first_rate_and_no_library_info(tiny_run):
  _, console = tiny_run
  for kind in ("train", "eval"):  # one each: one task, compiled once
    assert len(re.findall(COMPILE_LINE.format(kind, "tag"), console)) == 1, console[-3000:]
  assert not library_info_sources(console), library_info_sources(console)
  assert "orbax" not in console and "checkpoint_manager" not in console
  progress = [line for line in console.splitlines() if f"/{STEPS} (" in line]
  assert len(progress) == 2  # logged every 5 steps
  assert re.search(r"\| [\d.]+ steps/s [\d.]+ ex/s \| ETA \d+:\d\d:\d\d$", progress[0]), progress


def git(*args: str) -> str:
  return subprocess.run(
      ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
  ).stdout.strip()


def test_results_carry_their_provenance(tiny_run, workspace):  # noqa: F811
  workdir, _ = tiny_run
  saved = json.loads((workdir / "results.json").read_text())
  config = json.loads((workdir / "config.json").read_text())
  about = saved.pop("provenance")
  assert {k: about[k] for k in ("step", "method", "seed")} == {
      "step": STEPS,
      "method": config["method"],
      "seed": config["seed"],
  }
  canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
  assert about["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
  expected_code = {"version": hyperx_jax.__version__}
  if (ROOT / ".git").exists():  # a checkout (or worktree): the commit and whether it is dirty
    expected_code.update(
        git_commit=git("rev-parse", "HEAD"),
        git_dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
    )
  assert about["code"] == expected_code
  # Every eval pair counts all its test sentences (blank-line separated in the IOB2 files).
  for key, entry in saved.items():
    lang = key.split(":")[1]
    text = (workspace / "data" / f"tag_{lang}_test.iob2").read_text().strip()
    assert entry["examples"] == len(text.split("\n\n")), key


def test_config_and_hparams_are_in_the_event_file(tiny_run):
  from tensorboardX.proto import plugin_hparams_pb2

  workdir, _ = tiny_run
  (event_file,) = workdir.glob("events.out.tfevents.*")
  values = {
      v.tag: v for e in read_events(event_file) if e.HasField("summary") for v in e.summary.value
  }
  text = values["config/text_summary"].tensor.string_val[0].decode()
  config = json.loads((workdir / "config.json").read_text())
  # A Markdown code block (indented) of the config.json the run wrote.
  assert json.loads("\n".join(line[4:] for line in text.splitlines())) == config
  start = plugin_hparams_pb2.HParamsPluginData.FromString(
      values["_hparams_/session_start_info"].metadata.plugin_data.content
  ).session_start_info
  assert start.hparams["seed"].number_value == config["seed"]
  assert start.hparams["optim.lr"].number_value == pytest.approx(config["optim"]["lr"])
  assert start.hparams["method"].string_value == config["method"]


def without_code_state(results: dict) -> dict:
  provenance = {k: v for k, v in results["provenance"].items() if k != "code"}
  return {**results, "provenance": provenance}


def test_evaluate_writes_its_own_directory_and_leaves_the_runs_results(tiny_run, env, tmp_path):
  workdir, _ = tiny_run
  names = ("results.json", "results.md", "results.csv", "results.png")
  before = {name: (workdir / name).read_bytes() for name in names}
  run_results = json.loads(before["results.json"])

  done = cli(env, "hyperx_jax.evaluate", f"--workdir={workdir}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert {name: (workdir / name).read_bytes() for name in names} == before
  evaluated = json.loads((workdir / "eval" / f"step_{STEPS}" / "results.json").read_text())
  # Same checkpoint, same numbers, same provenance (but for the code's state, read at each call).
  assert without_code_state(evaluated) == without_code_state(run_results)
  assert len(re.findall(COMPILE_LINE.format("eval", "tag"), done.stderr)) == 1
  assert not library_info_sources(done.stderr)  # orbax's warnings may stay

  out = tmp_path / "partial"
  done = cli(
      env,
      "hyperx_jax.evaluate",
      f"--workdir={workdir}",
      "--pairs=tag:bb",
      f"--out={out}",
      "--verbose",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  partial = json.loads((out / "results.json").read_text())
  assert without_code_state(partial) == without_code_state(
      {"tag:bb": run_results["tag:bb"], "provenance": run_results["provenance"]}
  )
  # orbax's INFO lines are back, named by their source
  assert "checkpoint_manager.py" in library_info_sources(done.stderr), done.stderr[-3000:]
  assert {name: (workdir / name).read_bytes() for name in names} == before

  done = cli(
      env, "hyperx_jax.evaluate", f"--workdir={workdir}", "--pairs=tag:bb", "--replace_run_results"
  )
  assert done.returncode != 0 and "takes neither --pairs nor --out" in done.stderr
  assert "compiling" not in done.stderr
  done = cli(env, "hyperx_jax.evaluate", f"--workdir={workdir}", f"--out={workdir}/")
  assert done.returncode != 0 and "pass --replace_run_results" in done.stderr
  assert "compiling" not in done.stderr
  assert {name: (workdir / name).read_bytes() for name in names} == before


def on_a_terminal(env, *args: str) -> str:
  """The console of `python -m ARGS` run on a pseudo-terminal (progress bars on)."""
  chunks = []

  def read(fd):
    data = os.read(fd, 4096)
    chunks.append(data)
    return data

  saved, cwd = dict(os.environ), os.getcwd()  # pty.spawn takes neither env nor cwd
  os.environ.clear()
  os.environ.update(env)
  try:
    os.chdir(ROOT)
    pty.spawn([sys.executable, "-m", *args], read)
  finally:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(saved)
  return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_on_a_terminal_each_line_prints_once_and_library_lines_stay_off(workspace, env, tmp_path):
  console = on_a_terminal(
      env,
      "hyperx_jax.main",
      f"--config={ROOT}/configs/tiny.py:workspace={workspace},tasks=tag,steps={STEPS}",
      f"--workdir={tmp_path / 'run'}",
  )
  lines = [line.split("\r")[-1] for line in console.splitlines()]
  assert any(re.match(r"\d\d:\d\d:\d\d step 5/10 \(", line) for line in lines), console[-3000:]
  progress = [line for line in lines if re.search(r"\bstep 5/10 \(", line)]
  assert len(progress) == 1, progress  # once, with its time (not again through the bar)
  assert "Saving checkpoint" not in console and "orbax" not in console, console[-3000:]
