"""Static adapters: one stored adapter per unit (per task, or per language for MAD-X).

Parameters are tables [n_units, L, ...]; `__call__(unit_ids [G])` gathers the groups' rows
(ids are traced, so switching task or language does not recompile) and returns the same
`AdapterWeights` [L, G, ...] the hypernetwork produces.

Init (docs/method.md): D, U ~ N(0, init_std²), biases 0, and the post-LayerNorm's γ = 0, β = 0,
so a fresh adapter is exactly the identity (γ = 1 would add a unit-variance vector to the frozen
backbone's residual stream at step 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hyperx_jax.models.adapters import AdapterWeights, adapter_shapes
from hyperx_jax.models.layers import param

_AXES = {
    "down": ("embed", "bottleneck"),
    "down_bias": ("bottleneck",),
    "up": ("bottleneck", "embed"),
    "up_bias": ("embed",),
    "ln_scale": ("embed",),
    "ln_bias": ("embed",),
}
_RANDOM = ("down", "up")  # N(0, std²); everything else starts at 0


class StaticAdapters(nnx.Module):
  """A table of `num_units` adapter sets, each with one adapter per layer."""

  def __init__(
      self,
      num_units: int,
      *,
      num_layers: int,
      hidden_size: int,
      bottleneck: int,
      layer_norm: bool = True,
      init_std: float = 0.01,
      unit_axis: str = "tasks",
      param_dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.num_units = num_units
    for name, shape in adapter_shapes(hidden_size, bottleneck, layer_norm).items():
      std = init_std if name in _RANDOM else 0.0
      setattr(
          self,
          name,
          param(
              rngs,
              (num_units, num_layers) + shape,
              (unit_axis, "layers") + _AXES[name],
              std=std,
              dtype=param_dtype,
          ),
      )
    if not layer_norm:
      self.ln_scale = self.ln_bias = None

  def __call__(self, unit_ids: jax.Array) -> AdapterWeights:
    """unit_ids: [G] int -> AdapterWeights, leaves [L, G, ...]."""

    def rows(table):  # [n, L, ...] -> [L, G, ...]
      return None if table is None else jnp.moveaxis(jnp.take(table[...], unit_ids, axis=0), 0, 1)

    return AdapterWeights(
        down=rows(self.down),
        down_bias=rows(self.down_bias),
        up=rows(self.up),
        up_bias=rows(self.up_bias),
        ln_scale=rows(self.ln_scale),
        ln_bias=rows(self.ln_bias),
    )
