"""Flax NNX XLM-R encoder (RoBERTa architecture, post-LayerNorm) with adapter slots.

All layer parameters are stacked on a leading `layers` axis ([L, ...]) and applied by a
`jax.lax.scan` over that stacked pytree; the unrolled path (`scan_layers=False`) indexes layer i
of the same arrays. Per-layer adapter weights (`AdapterWeights`, leaves [L, G, ...]) ride on the
same axis and enter the scan next to the layer's own parameters.

Parameter paths (NNX state paths, `/`-joined):

    embeddings/word                 [V, H]       (vocab, embed)   tied MLM decoder
    embeddings/position             [P, H]       (None, embed)
    embeddings/token_type           [T, H]       (None, embed)
    embeddings/ln/{scale,bias}      [H]
    layers/attention/{query,key,value}/kernel  [L, H, N, D]   (layers, embed, heads, kv)
    layers/attention/{query,key,value}/bias    [L, N, D]
    layers/attention/out/kernel     [L, N, D, H]  (layers, heads, kv, embed)
    layers/attention/out/bias       [L, H]
    layers/attention_ln/{scale,bias}  [L, H]
    layers/ffn_in/kernel            [L, H, F]    (layers, embed, mlp);  bias [L, F]
    layers/ffn_out/kernel           [L, F, H]    (layers, mlp, embed);  bias [L, H]
    layers/output_ln/{scale,bias}   [L, H]

With `pre_layer_norm` (XLM-R XL/XXL: LayerNorm before each sublayer, none on the embeddings,
one after the last layer) `embeddings/ln` is replaced by `final_ln/{scale,bias}` [H], and
`attention_ln` / `output_ln` normalise the inputs of the attention / FFN sublayers.

Every backbone LayerNorm's path matches `(^|/)([a-z_]*ln)/`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
from flax import nnx

from hyperx_jax.config.vocabulary import (
    ATTENTION_IMPLEMENTATIONS,
    CUDNN_ATTENTION,
    DTYPES,
    PLACEMENTS,
    REMAT_POLICIES,
    SPLASH_ATTENTION,
    XLA_ATTENTION,
)
from hyperx_jax.models.adapters import AdapterWeights, apply_adapter_stack, layer_slice
from hyperx_jax.models.attention import AttentionMask, dot_product_attention, row_lengths
from hyperx_jax.models.layers import (
    INIT_STD,
    Dense,
    LayerNorm,
    apply_keep_mask,
    dense,
    dropout,
    gelu,
    keep_mask,
    layer_norm,
    param,
    softmax,
)

# Hugging Face `config.json` key -> EncoderConfig field.
_HF_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_positions",
    "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps",
    "pad_token_id": "pad_token_id",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
}
_HF_MODEL_TYPES = ("xlm-roberta", "roberta", "camembert", "xlm-roberta-xl")
_PRE_LN_MODEL_TYPES = ("xlm-roberta-xl",)

# XLM-R sizes (Conneau et al. 2020; Goyal et al. 2021 for XL/XXL).
_PRESETS = {
    "base": dict(
        vocab_size=250002, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072
    ),
    "large": dict(
        vocab_size=250002, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096
    ),
    "xl": dict(
        vocab_size=250880,
        hidden_size=2560,
        num_layers=36,
        num_heads=32,
        intermediate_size=10240,
        pre_layer_norm=True,
    ),
    "xxl": dict(
        vocab_size=250880,
        hidden_size=4096,
        num_layers=48,
        num_heads=32,
        intermediate_size=16384,
        pre_layer_norm=True,
    ),
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Sizes and options of the XLM-R encoder."""

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int = 514
  type_vocab_size: int = 1
  layer_norm_eps: float = 1e-5
  pad_token_id: int = 1
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  scan_layers: bool = True  # False = unrolled python loop (debugging, parity)
  remat: str = "none"  # "none" | "full" | "dots"
  adapter_placement: str = "ffn_output"  # or "layer_output"
  pre_layer_norm: bool = False  # True for XLM-R XL/XXL (HF model_type "xlm-roberta-xl")
  attention: str = XLA_ATTENTION  # the kernel (models/attention.py; 'auto' is resolved before)

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"EncoderConfig: hidden_size={self.hidden_size} is not divisible by "
          f"num_heads={self.num_heads}"
      )
    for field, value, known in (
        ("remat", self.remat, REMAT_POLICIES),
        ("adapter_placement", self.adapter_placement, PLACEMENTS),
        ("attention", self.attention, ATTENTION_IMPLEMENTATIONS),
        ("dtype", self.dtype, DTYPES),
        ("param_dtype", self.param_dtype, DTYPES),
    ):
      if value not in known:
        raise ValueError(f"EncoderConfig.{field}={value!r} is unknown; known: {', '.join(known)}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def longest_sequence(self) -> int:
    """The most tokens a sequence may hold: RoBERTa position ids start at pad_token_id + 1."""
    return self.max_positions - self.pad_token_id - 1

  @classmethod
  def from_hf(
      cls, config: Union[str, pathlib.Path, Mapping[str, Any]], **overrides
  ) -> "EncoderConfig":
    """From a Hugging Face `config.json` (path to the file or its directory, or the dict)."""
    source = "<dict>"
    if not isinstance(config, Mapping):
      path = pathlib.Path(config)
      if path.is_dir():
        path = path / "config.json"
      if not path.is_file():
        raise FileNotFoundError(f"no Hugging Face config at {path}")
      source = str(path)
      config = json.loads(path.read_text())
    model_type = config.get("model_type")
    if model_type is not None and model_type not in _HF_MODEL_TYPES:
      raise ValueError(
          f"{source}: model_type={model_type!r} is not an XLM-R/RoBERTa encoder; "
          f"known: {', '.join(_HF_MODEL_TYPES)}"
      )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
      raise ValueError(f"{source}: hidden_act={act!r}; only exact 'gelu' is supported")
    pos_type = config.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(
          f"{source}: position_embedding_type={pos_type!r}; only 'absolute' is supported"
      )
    missing = [k for k in list(_HF_CONFIG_KEYS)[:5] if k not in config]
    if missing:
      raise ValueError(f"{source}: missing keys {missing}")
    kwargs = {
        ours: config[theirs]
        for theirs, ours in _HF_CONFIG_KEYS.items()
        if config.get(theirs) is not None
    }
    kwargs["pre_layer_norm"] = model_type in _PRE_LN_MODEL_TYPES
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self) -> dict[str, Any]:
    """The Hugging Face `config.json` of this encoder (the inverse of `from_hf`)."""
    config = {theirs: getattr(self, ours) for theirs, ours in _HF_CONFIG_KEYS.items()}
    model_type = _PRE_LN_MODEL_TYPES[0] if self.pre_layer_norm else "xlm-roberta"
    return {
        "model_type": model_type,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        **config,
    }

  @classmethod
  def preset(cls, name: str, **overrides) -> "EncoderConfig":
    """XLM-R sizes: "base", "large", "xl", "xxl"."""
    if name not in _PRESETS:
      raise ValueError(f"unknown XLM-R preset {name!r}; known: {', '.join(_PRESETS)}")
    return cls(**{**_PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- parameters


class Embeddings(nnx.Module):
  """word + position + token type, then LayerNorm unless pre-LN (dropout: by the encoder)."""

  def __init__(self, c: EncoderConfig, dtype, rngs: nnx.Rngs):
    h = c.hidden_size
    normal = dict(std=INIT_STD, dtype=dtype)
    self.word = param(rngs, (c.vocab_size, h), ("vocab", "embed"), **normal)
    self.position = param(rngs, (c.max_positions, h), (None, "embed"), **normal)
    self.token_type = param(rngs, (c.type_vocab_size, h), (None, "embed"), **normal)
    self.ln = None if c.pre_layer_norm else LayerNorm(h, dtype=dtype)


class Attention(nnx.Module):
  """Stacked multi-head self-attention projections, heads split out: [L, H, N, D]."""

  def __init__(self, c: EncoderConfig, dtype, rngs: nnx.Rngs):
    L, h, n, d = c.num_layers, c.hidden_size, c.num_heads, c.head_dim
    qkv = lambda: Dense(
        (L, h, n, d),
        ("layers", "embed", "heads", "kv"),
        (L, n, d),
        ("layers", "heads", "kv"),
        dtype=dtype,
        rngs=rngs,
    )
    self.query, self.key, self.value = qkv(), qkv(), qkv()
    self.out = Dense(
        (L, n, d, h),
        ("layers", "heads", "kv", "embed"),
        (L, h),
        ("layers", "embed"),
        dtype=dtype,
        rngs=rngs,
    )


class EncoderLayers(nnx.Module):
  """All L transformer layers, every parameter stacked on a leading `layers` axis."""

  def __init__(self, c: EncoderConfig, dtype, rngs: nnx.Rngs):
    L, h, f = c.num_layers, c.hidden_size, c.intermediate_size
    stacked = dict(lead=(L,), lead_axes=("layers",), dtype=dtype)
    self.attention = Attention(c, dtype, rngs)
    self.attention_ln = LayerNorm(h, **stacked)
    self.ffn_in = Dense(
        (L, h, f), ("layers", "embed", "mlp"), (L, f), ("layers", "mlp"), dtype=dtype, rngs=rngs
    )
    self.ffn_out = Dense(
        (L, f, h), ("layers", "mlp", "embed"), (L, h), ("layers", "embed"), dtype=dtype, rngs=rngs
    )
    self.output_ln = LayerNorm(h, **stacked)


# ----------------------------------------------------------------------------- forward


def position_ids_from_input_ids(input_ids: jax.Array, pad_id: int) -> jax.Array:
  """RoBERTa positions: non-pad tokens count from pad_id + 1, pads keep pad_id. [B, S]."""
  not_pad = (input_ids != pad_id).astype(jnp.int32)
  return jnp.cumsum(not_pad, axis=1) * not_pad + pad_id


def segment_position_ids(segment_ids: jax.Array, pad_id: int) -> jax.Array:
  """Positions of packed rows: each segment counts from pad_id + 1 as RoBERTa counts a sentence
  of its own; padding (segment 0) keeps pad_id. segment_ids [B, S] -> [B, S]."""
  index = jnp.arange(segment_ids.shape[1])
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
  )  # [B, S]
  first = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)  # each token's segment start
  return jnp.where(segment_ids > 0, index - first + 1 + pad_id, pad_id).astype(jnp.int32)


def attention_mask_4d(attention_mask: jax.Array, segment_ids: Optional[jax.Array]) -> jax.Array:
  """Which keys each query sees, [B, 1, S or 1, S] bool: the real tokens ([B, 1, 1, S]), or
  with `segment_ids` its own segment only (block-diagonal [B, 1, S, S]; padding sees padding,
  so no row is empty). `attention.dot_product_attention` takes it in the form its kernel
  needs."""
  if segment_ids is None:
    return attention_mask.astype(bool)[:, None, None, :]
  return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def attention_mask_for(
    kernel: str, attention_mask: jax.Array, segment_ids: Optional[jax.Array]
) -> AttentionMask:
  """[B, S] attention mask (and segment ids of packed rows) in the forms `kernel` reads: the
  dense mask always (the dropout path); cuDNN takes one right-padded sentence per row as its
  lengths, splash takes segment ids (one sentence per row: 1 real, 0 padding)."""
  dense = attention_mask_4d(attention_mask, segment_ids)
  if kernel == CUDNN_ATTENTION and segment_ids is None:
    return AttentionMask(dense, lengths=row_lengths(attention_mask))
  if kernel == SPLASH_ATTENTION:
    segments = attention_mask if segment_ids is None else segment_ids
    return AttentionMask(dense, segments=segments.astype(jnp.int32))
  return AttentionMask(dense)


def self_attention(
    x: jax.Array,
    p: Mapping[str, Any],
    mask: AttentionMask,
    implementation: str,
    rate: float,
    key: Optional[jax.Array],
) -> jax.Array:
  """x: [B, S, H]; mask.dense: [B, 1, 1 or S, S] bool (True = attend). Returns [B, S, H]."""
  q = dense(x, p["query"], "bsh,hnd->bsnd")  # [B, S, N, D]
  k = dense(x, p["key"], "bsh,hnd->bsnd")
  v = dense(x, p["value"], "bsh,hnd->bsnd")
  if key is None or rate == 0.0:
    ctx = dot_product_attention(q, k, v, mask, implementation)  # softmax in fp32
  else:  # attention-probability dropout is not offered by the fused op
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
    logits = jnp.where(mask.dense, logits, jnp.finfo(jnp.float32).min)
    probs = softmax(logits)  # [B, N, S, S]
    ctx = attend_dropped_out(probs, keep_mask(key, rate, probs.shape), v, rate)
  return dense(ctx, p["out"], "bsnd,ndh->bsh")


@functools.partial(jax.checkpoint, static_argnums=(3,))
def attend_dropped_out(probs: jax.Array, keep: jax.Array, v: jax.Array, rate: float) -> jax.Array:
  """dropout(probs) @ v: probs [B, N, S, S] fp32, keep its mask, v [B, S, N, D] -> [B, S, N, D].
  The backward pass recomputes the dropped-out probabilities from probs and keep, which it
  keeps anyway (softmax's and dropout's own gradients), instead of storing a third
  [B, N, S, S] array per layer."""
  dropped = apply_keep_mask(probs, keep, rate).astype(v.dtype)
  return jnp.einsum("bnqk,bknd->bqnd", dropped, v)


def encoder_layer(
    c: EncoderConfig,
    p: Mapping[str, Any],
    x: jax.Array,
    mask: AttentionMask,
    adapters: tuple[AdapterWeights, ...],
    group_ids: Optional[jax.Array],
    key: Optional[jax.Array],
) -> jax.Array:
  """One layer; p holds this layer's parameter slices, adapters leaves [G, ...].

  post-LN: a = LN(x + attn(x));  out = LN(a + adapter(ffn(a)))
  pre-LN:  a = x + attn(LN(x));  out = a + adapter(ffn(LN(a)))
  """
  k_probs, k_attn, k_ffn = (None,) * 3 if key is None else jax.random.split(key, 3)
  ln = lambda y, name: layer_norm(y, p[name]["scale"], p[name]["bias"], c.layer_norm_eps)
  pre = c.pre_layer_norm
  attn = self_attention(
      ln(x, "attention_ln") if pre else x,
      p["attention"],
      mask,
      c.attention,
      c.attention_dropout,
      k_probs,
  )
  attn_out = dropout(attn, c.hidden_dropout, k_attn) + x  # [B, S, H]
  attn_out = attn_out if pre else ln(attn_out, "attention_ln")
  ffn = dense(ln(attn_out, "output_ln") if pre else attn_out, p["ffn_in"], "bsh,hf->bsf")
  ffn = dense(gelu(ffn), p["ffn_out"], "bsf,fh->bsh")
  ffn = dropout(ffn, c.hidden_dropout, k_ffn)
  if adapters and c.adapter_placement == "ffn_output":
    ffn = apply_adapter_stack(adapters, ffn, group_ids)
  out = ffn + attn_out if pre else ln(ffn + attn_out, "output_ln")
  if adapters and c.adapter_placement == "layer_output":
    out = apply_adapter_stack(adapters, out, group_ids)
  return out


def _remat(fn, policy: str):
  if policy == "none":
    return fn
  saveable = jax.checkpoint_policies.checkpoint_dots if policy == "dots" else None
  return jax.checkpoint(fn, policy=saveable, prevent_cse=False)


class XLMREncoder(nnx.Module):
  """XLM-R encoder; `embeddings.word` is the word-embedding table [V, H] (tied MLM head)."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = jnp.dtype(config.param_dtype)
    self.embeddings = Embeddings(config, dtype, rngs)
    self.layers = EncoderLayers(config, dtype, rngs)
    self.final_ln = LayerNorm(config.hidden_size, dtype=dtype) if config.pre_layer_norm else None

  def embed(
      self,
      input_ids: jax.Array,
      token_type_ids: Optional[jax.Array],
      key: Optional[jax.Array],
      segment_ids: Optional[jax.Array] = None,
  ) -> jax.Array:
    """[B, S] ids -> [B, S, H] in the compute dtype."""
    c, e = self.config, self.embeddings
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    positions = (
        position_ids_from_input_ids(input_ids, c.pad_token_id)
        if segment_ids is None
        else segment_position_ids(segment_ids, c.pad_token_id)
    )
    x = (
        jnp.take(e.word[...], input_ids, axis=0)
        + jnp.take(e.position[...], positions, axis=0)
        + jnp.take(e.token_type[...], token_type_ids, axis=0)
    )
    if e.ln is not None:
      x = e.ln(x.astype(jnp.float32), c.layer_norm_eps)
    return dropout(x.astype(jnp.dtype(c.dtype)), c.hidden_dropout, key)

  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array,
      token_type_ids: Optional[jax.Array] = None,
      *,
      adapters: tuple[AdapterWeights, ...] = (),
      group_ids: Optional[jax.Array] = None,
      dropout_rng: Optional[jax.Array] = None,
      segment_ids: Optional[jax.Array] = None,
  ) -> jax.Array:
    """input_ids, attention_mask, token_type_ids: [B, S]. Returns hidden states [B, S, H].

    `adapters`: AdapterWeights with leaves [L, G, ...]; `group_ids` [B] picks each example's
    group. `dropout_rng=None` disables dropout. `segment_ids` [B, S] (packed rows: 0 = padding,
    k = the row's k-th sentence): attention stays within a segment and positions restart.
    """
    c = self.config
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(
          f"XLMREncoder: input_ids {input_ids.shape} and attention_mask "
          f"{attention_mask.shape} must both be [batch, seq]"
      )
    if segment_ids is not None and segment_ids.shape != input_ids.shape:
      raise ValueError(
          f"XLMREncoder: segment_ids {segment_ids.shape} must match input_ids {input_ids.shape}"
      )
    if input_ids.shape[1] > c.longest_sequence:
      raise ValueError(
          f"XLMREncoder: sequence length {input_ids.shape[1]} exceeds the "
          f"{c.longest_sequence} positions of this encoder "
          f"(max_positions={c.max_positions})"
      )
    adapters = tuple(adapters)
    for i, w in enumerate(adapters):
      if w.down.shape[0] != c.num_layers:
        raise ValueError(
            f"XLMREncoder: adapters[{i}].down has {w.down.shape[0]} layers, the "
            f"encoder has {c.num_layers}"
        )
    layer_keys = None
    emb_key = None
    if dropout_rng is not None:
      emb_key = jax.random.fold_in(dropout_rng, c.num_layers)
      layer_keys = jax.vmap(lambda i: jax.random.fold_in(dropout_rng, i))(
          jnp.arange(c.num_layers)
      )  # layer i's key = fold_in(rng, i)
    x = self.embed(input_ids, token_type_ids, emb_key, segment_ids)  # [B, S, H]
    mask = attention_mask_for(c.attention, attention_mask, segment_ids)
    params = _values(self.layers)  # leaves [L, ...]

    def body(x, per_layer):
      p, adapter_slice, key = per_layer
      return encoder_layer(c, p, x, mask, adapter_slice, group_ids, key), None

    body = _remat(body, c.remat)
    if c.scan_layers:
      x, _ = jax.lax.scan(body, x, (params, adapters, layer_keys))
    else:
      for i in range(c.num_layers):
        p = jax.tree.map(lambda a: a[i], params)
        key = None if layer_keys is None else layer_keys[i]
        x, _ = body(x, (p, layer_slice(adapters, i), key))
    if self.final_ln is not None:
      x = self.final_ln(x, c.layer_norm_eps)
    return x


def _values(module: nnx.Module) -> dict[str, Any]:
  """A module's parameters as a nested dict of arrays."""
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def count_params(config: EncoderConfig) -> int:
  """Number of encoder parameters, computed abstractly (nothing materialised)."""
  model = nnx.eval_shape(lambda: XLMREncoder(config, rngs=nnx.Rngs(0)))
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
