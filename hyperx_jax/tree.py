"""Parameter paths and per-leaf maps over NNX states and pytrees.

A parameter's name is its `/`-joined state path (`encoder/layers/attention_ln/scale`,
`adapters/generators/down/kernel`, `heads/ner/out/kernel`): what the trainable and
learning-rate regex rules match, and how checkpoints are compared across runs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from flax import nnx


def path_str(path: Sequence[Any]) -> str:
  """NNX state path (keys) or jax key path -> 'a/b/0/c'."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
      if hasattr(k, attr):
        k = getattr(k, attr)
        break
    parts.append(str(k))
  if parts and parts[-1] == "value":  # jax key paths end in the Variable's `.value`
    parts = parts[:-1]
  return "/".join(parts)


def is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def map_params(fn: Callable[[str, Any], Any], tree: Any) -> Any:
  """fn(path, array) for every leaf of a state / pytree; keeps the tree's structure."""

  def one(path, x):
    if is_variable(x):
      return x.replace(fn(path_str(path), x.get_value()))
    return fn(path_str(path), x)

  return jax.tree_util.tree_map_with_path(one, tree, is_leaf=is_variable)


def flat_paths(tree: Any) -> dict[str, Any]:
  """{path: leaf} of a pytree (nested dicts, NNX pure dicts, optimiser states)."""
  return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
