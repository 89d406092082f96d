"""Task heads: token classification, sequence (pair) classification, and the tied MLM head.

Dropout is functional (an explicit `dropout_rng`, None = deterministic): the encoder's.
The MLM head computes logits only at K chosen positions per example ([B, K, V]), never over
the full [B, S, V] (V = 250k for XLM-R).
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyperx_jax.config.vocabulary import POOLINGS
from hyperx_jax.models.layers import Dense, LayerNorm, dropout, gelu, param


class TokenClassificationHead(nnx.Module):
  """NER / POS: dropout + dense H -> n on every token. [B, S, H] -> [B, S, n]."""

  def __init__(
      self,
      hidden_size: int,
      num_labels: int,
      *,
      dropout_rate: float = 0.1,
      param_dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.dropout_rate = dropout_rate
    self.out = Dense.linear(
        hidden_size, num_labels, ("embed", "labels"), dtype=param_dtype, rngs=rngs
    )

  def __call__(self, hidden: jax.Array, *, dropout_rng: Optional[jax.Array] = None) -> jax.Array:
    return self.out(dropout(hidden, self.dropout_rate, dropout_rng)).astype(jnp.float32)


class SequenceClassificationHead(nnx.Module):
  """RoBERTa classification head on `<s>`: dropout, dense H->H, tanh, dropout, out_proj H->n."""

  def __init__(
      self,
      hidden_size: int,
      num_labels: int,
      *,
      dropout_rate: float = 0.1,
      pooling: str = "cls",
      param_dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    if pooling not in POOLINGS:
      raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
    self.dropout_rate = dropout_rate
    self.pooling = pooling
    self.dense = Dense.linear(
        hidden_size, hidden_size, (None, "embed"), dtype=param_dtype, rngs=rngs
    )
    self.out_proj = Dense.linear(
        hidden_size, num_labels, ("embed", "labels"), dtype=param_dtype, rngs=rngs
    )

  def __call__(
      self,
      hidden: jax.Array,
      *,
      dropout_rng: Optional[jax.Array] = None,
      mask: Optional[jax.Array] = None,
      segment_ids: Optional[jax.Array] = None,
      num_segments: int = 0,
  ) -> jax.Array:
    """hidden [B, S, H] (mask [B, S]: real tokens, for mean pooling) -> logits [B, n] f32;
    packed rows (segment_ids [B, S]) -> [B, num_segments, n], one row per segment."""
    if segment_ids is not None and num_segments < 1:
      raise ValueError(
          "SequenceClassificationHead: packed rows (segment_ids) need "
          f"num_segments >= 1, got {num_segments}"
      )
    rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
    pooled = (
        pool(hidden, mask, self.pooling)
        if segment_ids is None
        else pool_segments(hidden, segment_ids, num_segments, self.pooling)
    )
    x = dropout(pooled, self.dropout_rate, rngs[0])  # [B, H] or [B, K, H]
    x = jnp.tanh(self.dense(x))
    return self.out_proj(dropout(x, self.dropout_rate, rngs[1])).astype(jnp.float32)


def pool(hidden: jax.Array, mask: Optional[jax.Array], pooling: str) -> jax.Array:
  """[B, S, H] -> [B, H]: the `<s>` token ('cls'), or the mean over real tokens ('mean', how
  encoders such as e5 were trained)."""
  if pooling == "cls":
    return hidden[:, 0]
  m = (jnp.ones(hidden.shape[:2]) if mask is None else mask).astype(hidden.dtype)[..., None]
  return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1)


def pool_segments(
    hidden: jax.Array, segment_ids: jax.Array, num_segments: int, pooling: str
) -> jax.Array:
  """[B, S, H] -> [B, K, H]: `pool` applied to each of the K segments of packed rows (its first
  token, its `<s>`, for 'cls'; the mean over its tokens for 'mean'). Absent segments give 0."""
  members = segment_ids[:, None, :] == jnp.arange(1, num_segments + 1)[None, :, None]  # [B, K, S]
  if pooling == "cls":
    members = members & (jnp.cumsum(members, axis=-1) == 1)  # the segment's first token only
  weights = members.astype(hidden.dtype)
  return jnp.einsum("bks,bsh->bkh", weights, hidden) / jnp.maximum(
      weights.sum(-1, keepdims=True), 1
  )


class MLMHead(nnx.Module):
  """XLM-R LM head: dense H->H, exact GELU, LayerNorm, decoder tied to the word embeddings + bias."""

  def __init__(
      self,
      hidden_size: int,
      vocab_size: int,
      *,
      layer_norm_eps: float = 1e-5,
      param_dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.eps = layer_norm_eps
    self.dense = Dense.linear(
        hidden_size, hidden_size, (None, "embed"), dtype=param_dtype, rngs=rngs
    )
    self.ln = LayerNorm(hidden_size, dtype=param_dtype)
    self.bias = param(None, (vocab_size,), ("vocab",), dtype=param_dtype)

  def __call__(
      self, hidden: jax.Array, positions: jax.Array, word_embeddings: jax.Array
  ) -> jax.Array:
    """hidden [B, S, H], positions [B, K] int, word_embeddings [V, H] -> logits [B, K, V] f32."""
    x = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [B, K, H]
    x = gelu(self.dense(x))
    x = self.ln(x, self.eps)
    logits = jnp.einsum("bkh,vh->bkv", x, word_embeddings.astype(x.dtype))
    return logits.astype(jnp.float32) + self.bias[...].astype(jnp.float32)

  def load_hf(self, tensors: Optional[Mapping[str, np.ndarray]]) -> list[str]:
    """Copies Hugging Face `lm_head.*` tensors in; returns the names left freshly initialised.

    `tensors` maps HF names (with or without the `lm_head.` prefix) to arrays, as returned by
    `weights.load_mlm_head_weights`; None means the checkpoint has no MLM head.
    """
    targets = {
        "dense.weight": (self.dense.kernel, True),
        "dense.bias": (self.dense.bias, False),
        "layer_norm.weight": (self.ln.scale, False),
        "layer_norm.bias": (self.ln.bias, False),
        "bias": (self.bias, False),
    }
    given = {k.removeprefix("lm_head."): v for k, v in (tensors or {}).items()}
    if "bias" not in given and "decoder.bias" in given:
      given["bias"] = given["decoder.bias"]
    missing = []
    for name, (target, transpose) in targets.items():
      if name not in given:
        missing.append(f"lm_head.{name}")
        continue
      value = np.asarray(given[name], np.float32)
      value = value.T if transpose else value
      if value.shape != target.shape:
        raise ValueError(f"lm_head.{name}: checkpoint shape {value.shape}, expected {target.shape}")
      target[...] = jnp.asarray(value, target.dtype)
    if missing:
      logging.warning(
          "MLM head: no pretrained weights for %s; freshly initialised.", ", ".join(missing)
      )
    return missing
