"""Dropout masks: `layers.dropout` (16 random bits per element) against the same inverted
dropout on `jax.random.bernoulli` (a 32-bit uniform per element), at the shapes one encoder
layer drops.

    python -m hyperx_jax.benchmarks.dropout_bench [--batch 16] [--length 128] [--repeats 20]

Shapes (multilingual-e5-small): attention probabilities [B, 12, S, S] and hidden states
[B, S, 384], rate 0.1. Both are jitted and timed interleaved (one call of each per round);
median ms and the ratio are printed. On a 2-core CPU threefry's bits are most of dropout's
cost, so halving them is most of the difference.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp

from hyperx_jax.benchmarks import common as bcommon
from hyperx_jax.models.layers import dropout

RATE = 0.1
HEADS, HIDDEN = 12, 384


def bernoulli_dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def median_ms(fns: dict, x: jax.Array, repeats: int) -> dict[str, float]:
  """Median ms per call of each jitted fn(x, key), interleaved (key i in round i; round 0
  compiles)."""
  times = bcommon.time_interleaved(
      {
          name: lambda i, fn=fn: fn(x, jax.random.key(i)).block_until_ready()
          for name, fn in fns.items()
      },
      repeats,
  )
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(argv=None) -> dict[str, dict[str, float]]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args(argv)
  jax.config.update("jax_threefry_partitionable", True)
  fns = {
      "bernoulli": jax.jit(lambda x, k: bernoulli_dropout(x, RATE, k)),
      "16-bit mask": jax.jit(lambda x, k: dropout(x, RATE, k)),
  }
  shapes = {
      "attention probs": (args.batch, HEADS, args.length, args.length),
      "hidden states": (args.batch, args.length, HIDDEN),
  }
  print(f'{"shape":<34}{"bernoulli ms":>14}{"16-bit ms":>11}{"ratio":>8}')
  results = {}
  for what, shape in shapes.items():
    ms = median_ms(fns, jnp.ones(shape, jnp.float32), args.repeats)
    results[what] = ms
    print(
        f'{what + " " + str(list(shape)):<34}{ms["bernoulli"]:>14.2f}{ms["16-bit mask"]:>11.2f}'
        f'{ms["bernoulli"] / ms["16-bit mask"]:>7.2f}x'
    )
  return results


if __name__ == "__main__":
  main()
