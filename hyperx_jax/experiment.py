"""Run methods × seeds of one config (same data and budget) and compare them in one table.

    hyperx experiment --config=configs/demo.py --methods=hyperx,task_adapters,madx \\
        --seeds=1,2,3 --workdir=runs/transfer [--language_sources=learned,typology,both] \\
        [--set=optim.b2=0.9 ...] [--dry_run]

Each (method, seed) trains in its own run directory `WORKDIR/<method>/seed<seed>` with
`python -m hyperx_jax.main --config=CONFIG:method=<method> --config.seed=<seed>` (plus any
`--set` overrides, applied to every run). Hyper-X takes the config's own language source unless
`--language_sources` is given: then it runs once per source (`hyperx` = learned,
`hyperx-typology`, `hyperx-both`: `CONFIG:...,language_source=<source>`; the config must accept
that argument, as configs/demo.py does). Rerunning the same command resumes: finished runs
(with results.json) are kept, an interrupted one resumes from its last checkpoint. Then
`compare` writes `WORKDIR/compare.{md,csv,png}`: mean ± std over seeds per method and pair,
zero-shot pairs marked. The config file must accept a `method=` argument (every config in
configs/ does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from absl import app, flags

from hyperx_jax import cli, compare, fileio, language_swap
from hyperx_jax.config.vocabulary import LANGUAGE_SOURCES, LEARNED_SOURCE, METHODS


def with_arg(config_arg: str, name: str, value: str) -> str:
  """'configs/demo.py:steps=100' + method=madx -> 'configs/demo.py:steps=100,method=madx'."""
  path, _, arg = config_arg.partition(":")
  items = [item for item in arg.split(",") if item and not item.startswith(f"{name}=")]
  return f"{path}:" + ",".join(items + [f"{name}={value}"])


def with_method(config_arg: str, method: str) -> str:
  return with_arg(config_arg, "method", method)


def with_variant(config_arg: str, variant: str, explicit_source: bool = False) -> str:
  """A variant (compare.variant_name: 'madx', 'hyperx', 'hyperx-typology') as config args;
  Hyper-X's language source is passed when the name has one, or always if `explicit_source`
  ('hyperx' = learned), else the config's default stands."""
  method, _, source = variant.partition("-")
  config_arg = with_method(config_arg, method)
  if method == "hyperx" and (source or explicit_source):
    config_arg = with_arg(config_arg, "language_source", source or LEARNED_SOURCE)
  return config_arg


Args = tuple[tuple[str, str], ...]  # config arguments of one grid point: (('k', '10'),)


def run_dir(workdir: str, method: str, seed: int, args: Args = ()) -> str:
  """WORKDIR/<method>[/<name><value>...]/seed<seed>, e.g. runs/fewshot/hyperx/k10/seed1."""
  return os.path.join(workdir, method, *(f"{n}{v}" for n, v in args), f"seed{seed}")


def column(method: str, args: Args = ()) -> str:
  """The compare column of a grid point: 'hyperx', or 'hyperx k=10'."""
  return " ".join([method, *(f"{n}={v}" for n, v in args)])


def train_command(
    config_arg: str,
    method: str,
    seed: int,
    workdir: str,
    overrides: Sequence[str],
    explicit_source: bool = False,
    args: Args = (),
    seed_arg: Optional[str] = None,
) -> list[str]:
  """`method`: a variant name (a method, or 'hyperx-<language source>'); `args`: the config
  arguments of the grid point; `seed_arg`: a config argument that also takes the seed (e.g.
  the few-shot sample's)."""
  config_arg = with_variant(config_arg, method, explicit_source)
  for name, value in args + (((seed_arg, str(seed)),) if seed_arg else ()):
    config_arg = with_arg(config_arg, name, value)
  return [
      sys.executable,
      "-m",
      "hyperx_jax.main",
      f"--config={config_arg}",
      f"--config.seed={seed}",
      f"--workdir={run_dir(workdir, method, seed, args)}",
  ] + [f"--config.{o}" for o in overrides]


def vary_grid(specs: Sequence[str]) -> list[Args]:
  """['k=10,50', 'steps=100'] -> every combination: [(('k', '10'), ('steps', '100')), ...]."""
  grid: list[Args] = [()]
  for spec in specs:
    name, eq, values = spec.partition("=")
    if not eq or not name or not values:
      raise app.UsageError(f"--vary={spec!r}: expected NAME=V1,V2,... (a config argument)")
    grid = [point + ((name, v),) for point in grid for v in values.split(",") if v]
  return grid


def _ints(text: str) -> list[int]:
  return [int(s) for s in text.split(",") if s]


def define_flags() -> None:
  flags.DEFINE_string(
      "config",
      None,
      "configs/<name>.py[:arg] (a path: the file is loaded as it is)",
      required=True,
  )
  flags.DEFINE_string("methods", "hyperx,task_adapters,madx", "Comma-separated methods.")
  flags.DEFINE_string("seeds", "1,2,3", "Comma-separated seeds.")
  flags.DEFINE_string(
      "language_sources",
      None,
      "Hyper-X language sources, comma-separated, some "
      f"of {list(LANGUAGE_SOURCES)} (default: the config's own).",
  )
  flags.DEFINE_string(
      "workdir", None, "Root of the runs: WORKDIR/<method>/seed<seed>.", required=True
  )
  flags.DEFINE_multi_string(
      "set", [], "A config override for every run, FIELD=VALUE, e.g. optim.b2=0.9 (repeatable)."
  )
  flags.DEFINE_multi_string(
      "vary",
      [],
      "A config argument to run at several values, NAME=V1,V2 (repeatable: every "
      "combination), e.g. k=10,50,100; each is its own compare column.",
  )
  flags.DEFINE_string(
      "seed_arg",
      None,
      "A config argument that also takes each run's seed (e.g. sample_seed: the few-shot "
      "sample differs per seed).",
  )
  flags.DEFINE_bool("dry_run", False, "Print the commands only.")
  flags.DEFINE_bool(
      "language_swap",
      False,
      "After training, score every run's zero-shot pairs with each trained language's vector "
      "(hyperx evaluate --language_swap) and write WORKDIR/language_swap.md.",
  )


def grid_of(f: Any) -> tuple[list[str], list[int], bool]:
  """(variants, seeds, whether the language source is explicit) of the flags, checked."""
  methods = [m for m in f.methods.split(",") if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise app.UsageError(f"unknown methods {unknown}; known: {list(METHODS)}")
  explicit = f.language_sources is not None
  sources = [s for s in (f.language_sources or LEARNED_SOURCE).split(",") if s]
  unknown = [s for s in sources if s not in LANGUAGE_SOURCES]
  if unknown or not sources:
    raise app.UsageError(
        f"--language_sources={f.language_sources!r}: expected some of {list(LANGUAGE_SOURCES)}"
    )
  variants = [
      compare.variant_name(m, s)
      for m in methods
      for s in (sources if m == "hyperx" else [LEARNED_SOURCE])
  ]
  try:
    seeds = _ints(f.seeds)
  except ValueError:
    raise app.UsageError(
        f"--seeds={f.seeds!r}: expected comma-separated integers, e.g. 1,2,3"
    ) from None
  if not variants or not seeds:
    raise app.UsageError("need at least one method and one seed")
  config_file = f.config.partition(":")[0]
  if not os.path.isfile(config_file):
    raise app.UsageError(
        f"--config: {config_file!r} is not a file (expected configs/<name>.py[:arg])"
    )
  return variants, seeds, explicit


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  variants, seeds, explicit = grid_of(args)
  points = vary_grid(args.vary)
  # seed-major: early rows compare methods
  grid = [(v, s, p) for s in seeds for v in variants for p in points]
  for i, (method, seed, point) in enumerate(grid, 1):
    directory = run_dir(args.workdir, method, seed, point)
    command = train_command(
        args.config, method, seed, args.workdir, args.set, explicit, point, args.seed_arg
    )
    method = column(method, point)
    if os.path.exists(os.path.join(directory, "results.json")):
      print(f"[{i}/{len(grid)}] {method} seed {seed}: done ({directory})", flush=True)
      continue
    print(f'[{i}/{len(grid)}] {method} seed {seed}: {" ".join(command)}', flush=True)
    if args.dry_run:
      continue
    start = time.monotonic()
    if subprocess.run(command, check=False).returncode != 0:
      sys.exit(
          f"[{i}/{len(grid)}] {method} seed {seed} failed (its log is above; its run "
          f"directory {directory} is kept). Fix it and rerun the same command: finished "
          "runs are kept and this one resumes from its last checkpoint."
      )
    print(
        f"[{i}/{len(grid)}] {method} seed {seed}: finished in {time.monotonic() - start:.0f} s",
        flush=True,
    )
  if args.dry_run:
    return
  runs = [
      compare.load_run(run_dir(args.workdir, m, s, p), column(m, p) if p else None)
      for m, s, p in grid
  ]
  print(compare.write(runs, args.workdir))
  print(f'wrote {os.path.join(args.workdir, "compare.md")} (.csv, .png)')
  if args.language_swap:
    swap_runs(runs, args.workdir)


def swap_command(directory: str) -> list[str]:
  """Scores a finished run's zero-shot pairs with every trained language's vector, into the
  run directory (`hyperx evaluate --language_swap`)."""
  return [
      sys.executable,
      "-m",
      "hyperx_jax.evaluate",
      f"--workdir={directory}",
      "--language_swap",
      f"--out={directory}",
  ]


def swap_runs(runs: Sequence[compare.RunResult], workdir: str) -> None:
  """language_swap.json in every run (made once), then WORKDIR/language_swap.md: mean ± std
  over seeds per column, pair and vector."""
  tables = []
  for r in runs:
    path = os.path.join(r.directory, language_swap.JSON_NAME)
    if not os.path.exists(path):
      print(f"language swap: {r.directory}", flush=True)
      if subprocess.run(swap_command(r.directory), check=False).returncode != 0:
        sys.exit(f"language swap of {r.directory} failed (its log is above); rerun the command")
    with open(path) as f:
      tables.append((r.column, json.load(f)))
  text = language_swap.aggregate(tables)
  fileio.atomic_write_text(os.path.join(workdir, language_swap.MD_NAME), text)
  print(text)
  print(f"wrote {os.path.join(workdir, language_swap.MD_NAME)}")


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
