"""The `hyperx` command: one entry point, one flag style (absl), one way to report errors.

    hyperx train --config=configs/demo.py --workdir=runs/demo
    hyperx evaluate --workdir=runs/demo
    hyperx --help                        # the commands, one line each

Each command is a module (`python -m hyperx_jax.<module>` runs it too) with `define_flags()`, its
absl flags, and `main(argv)`, which receives the positional arguments. Its docstring's first
line is its summary in `hyperx --help`.

A mistake of the user's (a bad config, a bad data file, a bad argument) prints one line,
`hyperx <command>: error: ...`, and exits with status 2; `--verbose` shows the traceback (and
other libraries' INFO logs).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import sys
import types
from typing import Iterator, Optional, Sequence

from hyperx_jax import compile_cache
from hyperx_jax.errors import UserError

# name -> module; `python -m <module>` and `hyperx <name>` run the same code.
COMMANDS = {
    "train": "hyperx_jax.main",
    "evaluate": "hyperx_jax.evaluate",
    "export": "hyperx_jax.export",
    "predict": "hyperx_jax.predict",
    "compare": "hyperx_jax.compare",
    "experiment": "hyperx_jax.experiment",
    "diagnostics": "hyperx_jax.diagnostics",
    "assets": "hyperx_jax.assets.__main__",
}
USER_ERROR_STATUS = 2


# Printed as one line: the user's mistakes (ConfigError, SourceError, PredictError, AssetError,
# ... are UserErrors) and files that are not where the user said.
USER_ERRORS = (UserError, FileNotFoundError)


@contextlib.contextmanager
def command_flags(module: types.ModuleType) -> Iterator[None]:
  """The module's flags (and --verbose) defined in absl's registry while the block runs."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  before = set(flags.FLAGS)
  module.define_flags()
  if "compilation_cache" not in flags.FLAGS:
    flags.DEFINE_string(
        "compilation_cache",
        "",
        "Where jax's persistent compilation cache lives (default: $JAX_COMPILATION_CACHE_DIR, "
        "else <asset cache>/jax_compilation_cache); 'off' turns it off.",
    )
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool(
        "verbose",
        False,
        "Show other libraries' INFO logs (jax, orbax, absl) and "
        "the traceback of an error (default: this package's lines, and an "
        "error as one line).",
    )
  try:
    yield
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)


def define_step_flag() -> None:
  """--step of the commands that read a trained run's checkpoint."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string(
      "step",
      "best",
      "Which checkpoint: 'best' (the step the run's results.json reports: selected on dev "
      "data, else the last), 'latest', or a step number.",
  )


def invoke(module: types.ModuleType, argv: Sequence[str]) -> None:
  """Runs a command in this process as the command line would (tests, notebooks): `argv` are
  its arguments, without the program name. Errors propagate."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  with command_flags(module):
    module.main(flags.FLAGS([module.__name__, *argv]))


def run(
    module: types.ModuleType, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None
) -> None:
  """Defines the module's flags (and --verbose), parses `argv` and calls `module.main`; a user
  error ends the process with one line on stderr."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  argv = list(sys.argv if argv is None else argv)
  prog = prog or argv[0]

  def main(args: list[str]) -> None:
    try:
      from hyperx_jax import writers  # pylint: disable=g-import-not-at-top

      writers.setup_console(flags.FLAGS.verbose)
      compile_cache.enable(flags.FLAGS.compilation_cache)
      module.main(args)
    except USER_ERRORS as e:
      if flags.FLAGS.verbose:
        raise
      message = str(e).strip() or type(e).__name__
      print(f"{prog}: error: {message}", file=sys.stderr)
      sys.exit(USER_ERROR_STATUS)

  with command_flags(module):
    app.run(main, argv=[prog] + argv[1:])


def usage() -> str:
  lines = [
      "usage: hyperx COMMAND [--flags] [arguments]   (hyperx COMMAND --help: its flags)",
      "",
      "commands:",
  ]
  for name, module_name in COMMANDS.items():
    lines.append(f"  {name:<12} {_summary_of(module_name)}")
  return "\n".join(lines)


def _summary_of(module_name: str) -> str:
  """A module's docstring's first line, read without importing it (no jax at --help)."""
  spec = importlib.util.find_spec(module_name)
  with open(spec.origin, encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  return doc.strip().splitlines()[0] if doc else ""


def main(argv: Optional[Sequence[str]] = None) -> None:
  """`hyperx COMMAND ...` (the console script)."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    return
  name = argv[1]
  if name not in COMMANDS:
    print(f"hyperx: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
    sys.exit(USER_ERROR_STATUS)
  run(importlib.import_module(COMMANDS[name]), [f"hyperx {name}"] + argv[2:])


if __name__ == "__main__":
  main()
