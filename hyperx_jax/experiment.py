"""Methods × seeds on one config, same data and budget, in one table.

    python -m hyperx_jax.experiment --config=configs/demo.py --methods=hyperx,task_adapters,madx \\
        --seeds=1,2,3 --workdir=runs/transfer [--language_sources=learned,typology,both] \\
        [--set=optim.b2=0.9 ...]

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

import argparse
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from hyperx_jax import compare
from hyperx_jax.schema import LANGUAGE_SOURCES, LEARNED_SOURCE, METHODS


def with_arg(config_arg: str, name: str, value: str) -> str:
  """'configs/demo.py:steps=100' + method=madx -> 'configs/demo.py:steps=100,method=madx'."""
  path, _, arg = config_arg.partition(':')
  items = [item for item in arg.split(',') if item and not item.startswith(f'{name}=')]
  return f'{path}:' + ','.join(items + [f'{name}={value}'])


def with_method(config_arg: str, method: str) -> str:
  return with_arg(config_arg, 'method', method)


def with_variant(config_arg: str, variant: str, explicit_source: bool = False) -> str:
  """A variant (compare.variant_name: 'madx', 'hyperx', 'hyperx-typology') as config args;
  Hyper-X's language source is passed when the name has one, or always if `explicit_source`
  ('hyperx' = learned), else the config's default stands."""
  method, _, source = variant.partition('-')
  config_arg = with_method(config_arg, method)
  if method == 'hyperx' and (source or explicit_source):
    config_arg = with_arg(config_arg, 'language_source', source or LEARNED_SOURCE)
  return config_arg


def run_dir(workdir: str, method: str, seed: int) -> str:
  return os.path.join(workdir, method, f'seed{seed}')


def train_command(config_arg: str, method: str, seed: int, workdir: str,
                  overrides: Sequence[str], explicit_source: bool = False) -> list[str]:
  """`method`: a variant name (a method, or 'hyperx-<language source>')."""
  config_arg = with_variant(config_arg, method, explicit_source)
  return ([sys.executable, '-m', 'hyperx_jax.main', f'--config={config_arg}',
           f'--config.seed={seed}', f'--workdir={run_dir(workdir, method, seed)}']
          + [f'--config.{o}' for o in overrides])


def _ints(text: str) -> list[int]:
  return [int(s) for s in text.split(',') if s]


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m hyperx_jax.experiment', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='configs/<name>.py[:arg]')
  parser.add_argument('--methods', default='hyperx,task_adapters,madx')
  parser.add_argument('--seeds', default='1,2,3')
  parser.add_argument('--language_sources', default=None,
                      help='Hyper-X language sources, comma-separated, some of '
                      f"{list(LANGUAGE_SOURCES)} (default: the config's own)")
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='config override for every run, e.g. optim.b2=0.9 (repeatable)')
  parser.add_argument('--dry_run', action='store_true', help='print the commands only')
  args = parser.parse_args(argv)
  methods = [m for m in args.methods.split(',') if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    parser.error(f'unknown methods {unknown}; known: {list(METHODS)}')
  explicit = args.language_sources is not None
  sources = [s for s in (args.language_sources or LEARNED_SOURCE).split(',') if s]
  unknown = [s for s in sources if s not in LANGUAGE_SOURCES]
  if unknown or not sources:
    parser.error(f'--language_sources={args.language_sources!r}: expected some of '
                 f'{list(LANGUAGE_SOURCES)}')
  variants = [compare.variant_name(m, s) for m in methods
              for s in (sources if m == 'hyperx' else [LEARNED_SOURCE])]
  try:
    seeds = _ints(args.seeds)
  except ValueError:
    parser.error(f'--seeds={args.seeds!r}: expected comma-separated integers, e.g. 1,2,3')
  if not variants or not seeds:
    parser.error('need at least one method and one seed')
  config_file = args.config.partition(':')[0]
  if not os.path.isfile(config_file):
    parser.error(f'--config: {config_file!r} is not a file (expected configs/<name>.py[:arg])')
  grid = [(v, s) for s in seeds for v in variants]  # seed-major: early rows compare methods
  for i, (method, seed) in enumerate(grid, 1):
    directory = run_dir(args.workdir, method, seed)
    command = train_command(args.config, method, seed, args.workdir, args.set, explicit)
    if os.path.exists(os.path.join(directory, 'results.json')):
      print(f'[{i}/{len(grid)}] {method} seed {seed}: done ({directory})', flush=True)
      continue
    print(f'[{i}/{len(grid)}] {method} seed {seed}: {" ".join(command)}', flush=True)
    if args.dry_run:
      continue
    start = time.monotonic()
    if subprocess.run(command, check=False).returncode != 0:
      sys.exit(f'[{i}/{len(grid)}] {method} seed {seed} failed (its log is above; its run '
               f'directory {directory} is kept). Fix it and rerun the same command: finished '
               'runs are kept and this one resumes from its last checkpoint.')
    print(f'[{i}/{len(grid)}] {method} seed {seed}: finished in '
          f'{time.monotonic() - start:.0f} s', flush=True)
  if args.dry_run:
    return
  runs = [compare.load_run(run_dir(args.workdir, m, s)) for m, s in grid]
  print(compare.write(runs, args.workdir))
  print(f'wrote {os.path.join(args.workdir, "compare.md")} (.csv, .png)')


if __name__ == '__main__':
  main()
