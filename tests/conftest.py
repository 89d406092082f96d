"""Test set-up: 8 fake CPU devices (set before jax is imported), jax safety switches, and the
fixtures the test files share."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the whole run, this process and the commands the tests
# start, removed at the end (HYPERX_COMPILATION_CACHE=off turns it off); never the user's own.
if "HYPERX_COMPILATION_CACHE" not in os.environ:
  os.environ["HYPERX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="hyperx_test_jax_cache_")
  atexit.register(shutil.rmtree, os.environ["HYPERX_COMPILATION_CACHE"], ignore_errors=True)

import jax  # noqa: E402

from hyperx_jax import compile_cache  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)
compile_cache.enable()

import pathlib  # noqa: E402

import pytest  # noqa: E402

from helpers import make_workspace  # noqa: E402


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> pathlib.Path:
  """A tiny random XLM-R checkpoint, tokenizer and data files (helpers.make_workspace)."""
  return make_workspace(tmp_path_factory.mktemp("tiny_workspace"))
