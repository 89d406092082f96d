"""fileio.atomic_write: whole or nothing, and no temporary left by a killed writer."""

import os
import subprocess
import sys

import pytest

from hyperx_jax import fileio


def test_replaces_whole_and_an_error_keeps_the_old_file(tmp_path):
  path = tmp_path / "config.json"
  fileio.atomic_write_text(path, "old")

  def fail_midway(f):
    f.write("half")
    raise OSError("No space left on device")

  with pytest.raises(OSError, match="No space"):
    fileio.atomic_write(path, fail_midway)
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]
  fileio.atomic_write(path, lambda f: f.write(b"new"), binary=True)
  assert path.read_text() == "new"


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
  dead = subprocess.run(
      [sys.executable, "-c", "import os; print(os.getpid())"],
      capture_output=True,
      text=True,
      check=True,
  ).stdout.strip()
  (tmp_path / f".results.json.tmp-{dead}").write_text('{"half')  # its writer was killed
  (tmp_path / f".results.json.tmp-{os.getppid()}").write_text("")  # a writer still running
  (tmp_path / f".results.md.tmp-{dead}").write_text("")  # another file's: left to its writer
  fileio.atomic_write_text(tmp_path / "results.json", "{}")
  assert sorted(os.listdir(tmp_path)) == sorted(
      [f".results.json.tmp-{os.getppid()}", f".results.md.tmp-{dead}", "results.json"]
  )
