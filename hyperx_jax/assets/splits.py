"""The seeded train/dev/test split shared by the treebank and the translation pairs."""

from __future__ import annotations

import numpy as np

SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
SEED = 123


def split_indices(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
  """A seeded permutation of range(n) cut 80/10/10 into train/dev/test (sorted inside each)."""
  perm = np.random.default_rng(seed).permutation(n)
  out, start = {}, 0
  for i, (name, frac) in enumerate(SPLITS):
    end = n if i == len(SPLITS) - 1 else start + int(round(frac * n))
    out[name] = np.sort(perm[start:end])
    start = end
  return out
