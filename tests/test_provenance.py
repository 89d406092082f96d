"""provenance.py: the config hash, and the code version in and out of a git checkout."""

import hashlib
import json
import shutil
import subprocess

import pytest

import hyperx_jax
from hyperx_jax import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def package_at(monkeypatch):
  """code_version() as if the package lived in the given directory."""

  def move(directory):
    monkeypatch.setattr(provenance, "_PACKAGE_DIR", str(directory))
    provenance.code_version.cache_clear()

  yield move
  provenance.code_version.cache_clear()


def git(cwd, *args) -> str:
  return subprocess.run(
      ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
      cwd=cwd,
      check=True,
      capture_output=True,
      text=True,
  ).stdout.strip()


def test_config_hash_is_over_sorted_compact_json():
  text = '{\n  "seed": 1,\n  "optim": {"lr": 0.001, "b1": 0.9}\n}'
  expected = hashlib.sha256(b'{"optim":{"b1":0.9,"lr":0.001},"seed":1}').hexdigest()
  assert provenance.config_sha256(text) == expected
  assert provenance.config_sha256('{"optim": {"b1": 0.9, "lr": 0.001}, "seed": 1}') == expected
  assert provenance.config_sha256('{"seed": 2, "optim": {"lr": 0.001, "b1": 0.9}}') != expected


def test_outside_git_the_version_alone(tmp_path, package_at, monkeypatch):
  package_at(tmp_path)  # not a checkout
  assert provenance.code_version() == {"version": hyperx_jax.__version__}
  provenance.code_version.cache_clear()
  monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
  assert provenance.code_version() == {"version": hyperx_jax.__version__}


@needs_git
def test_in_a_checkout_the_commit_and_whether_tracked_files_changed(tmp_path, package_at):
  repo = tmp_path / "repo"
  package = repo / "hyperx_jax"
  package.mkdir(parents=True)
  (package / "__init__.py").write_text("x = 1\n")
  git(repo, "init", "-q")
  git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
  package_at(package)
  # A copy inside someone else's repository, not tracked there: not this code's commit.
  assert provenance.code_version() == {"version": hyperx_jax.__version__}

  git(repo, "add", ".")
  git(repo, "commit", "-q", "-m", "package")
  package_at(package)
  assert provenance.code_version() == {
      "version": hyperx_jax.__version__,
      "git_commit": git(repo, "rev-parse", "HEAD"),
      "git_dirty": False,
  }
  (repo / "notes.txt").write_text("untracked files do not count\n")
  package_at(package)
  assert provenance.code_version()["git_dirty"] is False
  (package / "__init__.py").write_text("x = 2\n")
  package_at(package)
  assert provenance.code_version()["git_dirty"] is True


def test_provenance_block():
  about = provenance.provenance(step=7, method="madx", seed=3, config_json='{"a": 1}')
  assert about == {
      "step": 7,
      "method": "madx",
      "seed": 3,
      "config_sha256": hashlib.sha256(b'{"a":1}').hexdigest(),
      "code": provenance.code_version(),
  }
  json.dumps(about)  # JSON as it stands
