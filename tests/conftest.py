"""Test set-up: 8 fake CPU devices (set before jax is imported), jax safety switches, and the
fixtures the test files share."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)

import pathlib  # noqa: E402

import pytest  # noqa: E402

from helpers import make_workspace  # noqa: E402


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> pathlib.Path:
  """A tiny random XLM-R checkpoint, tokenizer and data files (helpers.make_workspace)."""
  return make_workspace(tmp_path_factory.mktemp("tiny_workspace"))
