"""Time from the command to the first training step, with jax's compilation cache off and on.

For each cache setting (off, then on with an empty cache directory), three `hyperx train`
processes of `--config` (default the offline demo; needs `python -m hyperx_jax.assets prepare`):

  first run    a fresh workdir, `--steps` steps (it saves a checkpoint at the end)
  resume       the same workdir with `2 * --steps`: restores the checkpoint, compiles again
  second seed  a fresh workdir with another seed

Each is timed from the process start to the first progress line (`log_every_steps=1`: the
first step done), read from its console as it is written, and stopped there (the first run is
left to finish: the resume needs its checkpoint). One process at a time; the two settings
alternate per scenario so that drift in the machine's load hits both.

  python -m hyperx_jax.benchmarks.startup_bench [--config configs/demo.py] [--steps 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

FIRST_STEP = re.compile(r"\bstep (\d+)/(\d+) \(")
SCENARIOS = ("first run", "resume", "second seed")
SETTINGS = ("off", "on")


def train_command(config: str, workdir: str, steps: int, seed: int, cache: str) -> list[str]:
  return [
      sys.executable,
      "-m",
      "hyperx_jax.main",
      f"--config={config}",
      f"--workdir={workdir}",
      f"--compilation_cache={cache}",
      f"--config.total_steps={steps}",
      f"--config.seed={seed}",
      "--config.log_every_steps=1",
      f"--config.checkpoint.every_steps={steps}",
      "--config.optim.warmup_steps=1",
  ]


def seconds_to_first_step(command: list[str], finish: bool) -> float:
  """Seconds from the start to the first progress line; the process is stopped there unless
  `finish` (then it is waited for, and must succeed)."""
  start = time.monotonic()
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
      command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
  )
  elapsed, tail = None, []
  for line in proc.stderr:
    tail = (tail + [line])[-20:]
    if elapsed is None and FIRST_STEP.search(line):
      elapsed = time.monotonic() - start
      if not finish:
        proc.kill()
        break
  proc.wait()
  if elapsed is None or (finish and proc.returncode != 0):
    sys.exit(f"{' '.join(command)} failed before its first step:\n{''.join(tail)}")
  return elapsed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--steps", type=int, default=2, help="steps of the first run")
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix="startup_bench_")
  cache_dir = os.path.join(root, "cache")
  caches = {"off": "off", "on": cache_dir}
  times: dict[tuple[str, str], float] = {}
  for scenario in SCENARIOS:
    for setting in SETTINGS:
      workdir = os.path.join(root, setting, "seed2" if scenario == "second seed" else "seed1")
      steps = 2 * args.steps if scenario == "resume" else args.steps
      seed = 2 if scenario == "second seed" else 1
      command = train_command(args.config, workdir, steps, seed, caches[setting])
      times[scenario, setting] = seconds_to_first_step(command, finish=scenario == "first run")
      print(f"{scenario:12s} cache {setting:3s}: {times[scenario, setting]:6.1f} s", flush=True)
  print(f"\nseconds from the command to the first training step ({args.config}, {root})")
  print(f"| {'':12s} | cache off | cache on | on / off |")
  print("|---|---:|---:|---:|")
  for scenario in SCENARIOS:
    off, on = times[scenario, "off"], times[scenario, "on"]
    print(f"| {scenario:12s} | {off:9.1f} | {on:8.1f} | {on / off:8.2f} |")


if __name__ == "__main__":
  main()
