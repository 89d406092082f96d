"""Building blocks shared by every model file: parameters with logical axes, Dense, LayerNorm,
GELU, softmax, dropout.

Parameters carry their logical axis names (`('vocab', 'embed')`, ...) as sharding metadata and
are created without a mesh; `hyperx_jax.sharding` places them. Randomly initialised parameters
draw one key from `rngs.params()`; constant ones (zeros, ones) draw none, so adding or removing
a constant parameter never changes another parameter's initial value.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[Optional[str], ...]

INIT_STD = 0.02  # BERT / RoBERTa initializer_range


def param(
    rngs: Optional[nnx.Rngs],
    shape: Sequence[int],
    axes: Sequence[Optional[str]],
    *,
    std: float = 0.0,
    fill: float = 0.0,
    dtype=jnp.float32,
) -> nnx.Param:
  """A parameter ~ N(0, std²) (or the constant `fill` when std = 0) tagged with logical axes."""
  shape, axes = tuple(shape), tuple(axes)
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {axes} do not match shape {shape}")
  if std > 0:
    value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
  else:
    value = jnp.full(shape, fill, jnp.float32)
  # Placement is the trainer's job: no sharding is applied while the module is built.
  return nnx.Param(value.astype(dtype), out_sharding=axes, eager_sharding=False)


class Dense(nnx.Module):
  """kernel ~ N(0, std²) and a zero bias; any (stacked) shapes, with their logical axes.

  `__call__(x)` is the plain [..., in] @ [in, out] + bias in x's dtype; stacked kernels are
  applied by `dense(x, slices, spec)` with an einsum spec.
  """

  def __init__(
      self,
      kernel_shape: Sequence[int],
      kernel_axes: Axes,
      bias_shape: Sequence[int],
      bias_axes: Axes,
      *,
      dtype=jnp.float32,
      std: float = INIT_STD,
      rngs: nnx.Rngs,
  ):
    self.kernel = param(rngs, kernel_shape, kernel_axes, std=std, dtype=dtype)
    self.bias = param(None, bias_shape, bias_axes, dtype=dtype)

  @classmethod
  def linear(cls, in_features: int, out_features: int, axes: Axes, **kwargs) -> "Dense":
    """A plain [in, out] layer whose bias takes the output axis."""
    return cls((in_features, out_features), axes, (out_features,), axes[1:], **kwargs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


def dense(x: jax.Array, p: Mapping[str, jax.Array], spec: str) -> jax.Array:
  """einsum(spec, x, kernel) + bias, the kernel cast to x's dtype at use."""
  return jnp.einsum(spec, x, p["kernel"].astype(x.dtype)) + p["bias"].astype(x.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm parameters (γ = `scale`, β = `bias`); `lead` are stacked leading dims, e.g.
  (L,) with axes ('layers',). `scale_init` is 1 for the backbone, 0 for adapters (identity)."""

  def __init__(
      self,
      hidden: int,
      *,
      lead: Sequence[int] = (),
      lead_axes: Axes = (),
      scale_init: float = 1.0,
      dtype=jnp.float32,
  ):
    self.scale = param(None, (*lead, hidden), (*lead_axes, "embed"), fill=scale_init, dtype=dtype)
    self.bias = param(None, (*lead, hidden), (*lead_axes, "embed"), dtype=dtype)

  def __call__(self, x: jax.Array, eps: float) -> jax.Array:
    return layer_norm(x, self.scale[...], self.bias[...], eps)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """(x - mean) / sqrt(var + eps) · γ + β over the last axis, in float32; result in x's dtype.

  scale, bias: [..., H], broadcast against x [..., S, H] by the caller.
  """
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


@jax.checkpoint
def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as XLM-R's `hidden_act='gelu'`. Its backward pass recomputes erf and exp
  from x: plain autodiff keeps them as two more [B, S, F] residuals per layer, the largest
  activations of the step after the attention probabilities."""
  return jax.nn.gelu(x, approximate=False)


def softmax(x: jax.Array) -> jax.Array:
  """jax.nn.softmax over the last axis under JAX's own output-only derivative rule
  (`jax.softmax_custom_jvp`, off by default): the backward pass keeps only y, as y · (g - Σ y g)
  needs nothing else, where plain autodiff through exp, sum and divide keeps exp(x - max) as
  well (one more [B, N, S, S] array per attention layer)."""
  with jax.softmax_custom_jvp(True):
    return jax.nn.softmax(x, axis=-1)


MASK_BITS = 16  # random bits per dropout decision: the keep rate is a multiple of 2**-16


def is_dropout_rate(rate: object) -> bool:
  """A rate dropout takes: a number in [0, 1)."""
  return isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate < 1.0


def keep_threshold(rate: float) -> int:
  """The 16-bit threshold below which an element is kept: round((1 - rate) * 2**16)."""
  if not is_dropout_rate(rate):
    raise ValueError(f"dropout rate {rate} must be in [0, 1)")
  return min(round((1.0 - rate) * 2**MASK_BITS), 2**MASK_BITS - 1)


def keep_mask(key: jax.Array, rate: float, shape: Sequence[int]) -> jax.Array:
  """Bool mask, True with probability keep_threshold(rate) / 2**16 (1 - rate to within 2**-17).

  Each 32-bit random word decides two elements (its two 16-bit halves): half the random bits
  of `jax.random.bernoulli`, which spends a 32-bit float per element, and threefry's bits are
  most of dropout's cost on CPU. The words are drawn in `shape`'s leading axes, so a mask of a
  batch-sharded activation is drawn sharded like it."""
  *lead, last = shape
  words = jax.random.bits(key, (*lead, -(-last // 2)), jnp.uint32)  # [..., ceil(last / 2)]
  halves = jax.lax.bitcast_convert_type(words, jnp.uint16)  # [..., ceil(last / 2), 2]
  halves = halves.reshape(*lead, -1)[..., :last]
  return halves < jnp.uint16(keep_threshold(rate))


def dropout(x: jax.Array, rate: float, key: Optional[jax.Array]) -> jax.Array:
  """Inverted dropout; the identity when `key` is None (evaluation) or rate is 0. Kept
  elements are scaled by 2**16 / keep_threshold(rate), so the expectation is exactly x."""
  if key is None or rate == 0.0:
    return x
  return apply_keep_mask(x, keep_mask(key, rate, x.shape), rate)


def apply_keep_mask(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
  """x where `keep` (a `keep_mask(..., rate, ...)`), scaled by 2**16 / keep_threshold(rate); 0
  elsewhere."""
  return jnp.where(keep, x * (2**MASK_BITS / keep_threshold(rate)), 0).astype(x.dtype)
