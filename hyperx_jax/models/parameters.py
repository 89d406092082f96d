"""Parameter counts per module, total and trainable (printed at the start of a run)."""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import numpy as np
from flax import nnx

from hyperx_jax.tree import path_str


def parameter_report(
    model: nnx.Module, trainable_filter: Optional[Callable[..., bool]] = None
) -> str:
  """A table of total / trainable parameter counts per module (first two path components).

  `trainable_filter` is either `f(name)` on the '/'-joined parameter path or an NNX-style
  predicate `f(path, variable)` (as `optim.trainable_filter` returns); None = all trainable.
  """
  two_args = (
      trainable_filter is not None and len(inspect.signature(trainable_filter).parameters) == 2
  )
  rows: dict[str, list[int]] = {}
  for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = path_str(path)
    group = "/".join(name.split("/")[:2])
    size = int(np.prod(leaf.shape))
    if trainable_filter is None:
      trainable = True
    else:
      trainable = trainable_filter(path, leaf) if two_args else trainable_filter(name)
    row = rows.setdefault(group, [0, 0])
    row[0] += size
    row[1] += size if trainable else 0
  total = sum(r[0] for r in rows.values())
  trainable = sum(r[1] for r in rows.values())
  width = max([len(g) for g in rows] + [len("module")])
  lines = [f"{'module':<{width}}  {'total':>14}  {'trainable':>14}", "-" * (width + 32)]
  lines += [f"{g:<{width}}  {t:>14,}  {tr:>14,}" for g, (t, tr) in rows.items()]
  lines += ["-" * (width + 32), f"{'all':<{width}}  {total:>14,}  {trainable:>14,}"]
  return "\n".join(lines)
