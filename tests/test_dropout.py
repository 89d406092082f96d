"""Dropout's keep mask: 16 random bits per element, the rate rounded to a multiple of 2**-16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperx_jax.config import ConfigError, environment
from hyperx_jax.models.layers import dropout, keep_mask, keep_threshold

from helpers import tiny_config

N = 1 << 20  # elements in the statistical checks


def test_keep_threshold_by_hand():
  assert keep_threshold(0.1) == 58982  # round(0.9 * 65536) = round(58982.4)
  assert keep_threshold(0.5) == 32768
  assert keep_threshold(0.0) == 65535  # every 16-bit value but the largest is kept
  for bad in (1.0, -0.1):
    with pytest.raises(ValueError, match="dropout rate"):
      keep_threshold(bad)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_fraction_and_independent_halves(rate):
  keep = np.asarray(keep_mask(jax.random.key(0), rate, (N // 256, 256)))
  p = keep_threshold(rate) / 2**16
  sigma = np.sqrt(p * (1 - p) / N)
  assert abs(keep.mean() - p) < 5 * sigma
  # Elements 2i and 2i+1 come from the two halves of one 32-bit word: still independent.
  both = (keep[:, 0::2] & keep[:, 1::2]).mean()
  assert abs(both - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / (N // 2))


def test_mask_shape_odd_last_axis_and_determinism():
  key = jax.random.key(3)
  a = keep_mask(key, 0.1, (4, 3, 7))
  assert a.shape == (4, 3, 7) and a.dtype == jnp.bool_
  np.testing.assert_array_equal(a, keep_mask(key, 0.1, (4, 3, 7)))
  assert not np.array_equal(
      keep_mask(key, 0.5, (64, 64)), keep_mask(jax.random.key(4), 0.5, (64, 64))
  )


def test_dropout_scales_kept_elements_and_keeps_the_mean():
  x = jnp.full((N // 128, 128), 2.0)
  assert dropout(x, 0.1, None) is x and dropout(x, 0.0, jax.random.key(0)) is x
  y = np.asarray(dropout(x, 0.1, jax.random.key(1)))
  scale = 2**16 / 58982
  np.testing.assert_allclose(np.unique(y), [0.0, 2.0 * scale], rtol=1e-6)
  p = 58982 / 2**16
  assert abs(y.mean() - 2.0) < 5 * 2.0 * scale * np.sqrt(p * (1 - p) / N)


def test_bad_dropout_rate_is_a_config_error_before_any_build(workspace):  # noqa: F811
  config = tiny_config(workspace)
  config.model.hidden_dropout, config.model.classifier_dropout = 1.0, -0.1
  with pytest.raises(ConfigError) as e:
    environment.parse(config, 8)
  assert "config.model.hidden_dropout: 1.0 is not a dropout rate in [0, 1)" in str(e.value)
  assert "config.model.classifier_dropout: -0.1 is not a dropout rate" in str(e.value)
  assert "attention_dropout" not in str(e.value)


def test_dropout_bench_smoke(capsys):
  from hyperx_jax.benchmarks import dropout_bench

  results = dropout_bench.main(["--batch", "2", "--length", "8", "--repeats", "2"])
  assert set(results) == {"attention probs", "hidden states"}
  assert all(ms > 0 for r in results.values() for ms in r.values())
  assert "ratio" in capsys.readouterr().out
  x = jnp.ones((4, 8))
  dropped = dropout_bench.bernoulli_dropout(x, 0.5, jax.random.key(0))
  assert set(np.unique(dropped)) <= {0.0, 2.0}
