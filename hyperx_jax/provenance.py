"""What made a results file: the run's step, method, seed, config hash and code version.

    {"step": 600, "method": "hyperx", "seed": 123,
     "config_sha256": "3f0c…",                      # of the canonical config JSON (below)
     "code": {"version": "0.1.0", "git_commit": "62de0be…", "git_dirty": false}}

The canonical config JSON is the config as `config.json` holds it, dumped with sorted keys and
no spaces, so `sha256(json.dumps(json.load(open('config.json')), sort_keys=True,
separators=(',', ':')))` recomputes the hash from a run directory. `git_commit` and
`git_dirty` (tracked files changed since that commit) are present only when the package is a
tracked part of a git checkout; elsewhere (an installed wheel, no git) `code` holds the version
alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from typing import Any, Mapping, Optional

import hyperx_jax

_PACKAGE_DIR = os.path.dirname(os.path.abspath(hyperx_jax.__file__))


def canonical_json(tree: Mapping[str, Any]) -> str:
  return json.dumps(tree, sort_keys=True, separators=(",", ":"))


def config_sha256(config_json: str) -> str:
  """sha256 (hex) of a config given as JSON text (e.g. `ConfigDict.to_json_best_effort()`)."""
  return hashlib.sha256(canonical_json(json.loads(config_json)).encode()).hexdigest()


def _git(*args: str) -> Optional[str]:
  """`git args` run in the package directory: its stdout, or None where git fails or is absent."""
  try:
    done = subprocess.run(
        ("git",) + args, cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=30, check=False
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def code_version() -> dict[str, Any]:
  """{'version'} plus {'git_commit', 'git_dirty'} when this package is tracked by git."""
  code: dict[str, Any] = {"version": hyperx_jax.__version__}
  # ls-files: the package's own files are in the checkout (not a copy under someone's repo).
  if _git("ls-files", "--error-unmatch", "__init__.py") is None:
    return code
  commit = _git("rev-parse", "HEAD")
  changes = _git("status", "--porcelain", "--untracked-files=no")
  if commit and changes is not None:
    code.update(git_commit=commit, git_dirty=bool(changes))
  return code


def provenance(
    *,
    step: int,
    method: str,
    seed: int,
    config_json: str,
    selection: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
  """The provenance block of a results file (see the module docstring); `selection` says what
  chose the checkpoint (`evaluate.selection`)."""
  out = {
      "step": int(step),
      "method": method,
      "seed": int(seed),
      "config_sha256": config_sha256(config_json),
      "code": dict(code_version()),
  }
  return out if selection is None else {**out, "selection": dict(selection)}
