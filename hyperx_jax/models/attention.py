"""The attention kernel: which implementation runs, and the one call that runs it.

    ctx = dot_product_attention(q, k, v, mask, implementation)   # [B, S, N, D]

Both implementations are `jax.nn.dot_product_attention` (jax/_src/nn/functions.py):

- `xla` (any backend): logits, the boolean mask (any form broadcastable to [B, N, S, S]) and a
  float32 softmax as ordinary XLA ops.
- `cudnn`: cuDNN's fused (flash) attention (jax/_src/cudnn/fused_attention_stablehlo.py). Its
  public entry takes a padding mask as `query_seq_lengths` / `key_value_seq_lengths` [B] int32
  (cuDNN's PADDING mask: no mask tensor, key blocks past a row's length are skipped), or a
  boolean mask, which jax turns into an additive bias (0 / the dtype's most negative number)
  of shape [B, 1, S, S]. One sentence per row is right-padded, so it goes as lengths; packed
  rows go as the block-diagonal mask (cuDNN's packed layout, `q_offsets` / `kv_offsets`, is
  not in jax's public API). It needs an NVIDIA GPU (flash attention: compute capability
  >= 8.0), bfloat16 or float16 q, k, v, a head dim that is a multiple of 8 and at most 128
  (256 from compute capability 9.0), and even sequence lengths when it trains with a bias. The
  public API has no attention-probability dropout; calls with dropout take the explicit path
  in `xlmr.self_attention`.

- `splash`: the Pallas splash-attention kernel (jax.experimental.pallas.ops.tpu.splash_attention),
  a TPU flash attention that takes segment ids: query i sees key j iff their segment ids are
  equal, so one sentence per row goes as the attention mask (1 real, 0 padding) and packed rows
  as their segment ids, with no [S, S] mask in memory. It tiles the sequence in blocks of
  SPLASH_BLOCK, so data.max_length must be a multiple of it. Under a mesh it runs inside
  `jax.shard_map` (batch over the data axes, heads over 'tensor'); the mesh is read from
  `jax.sharding.get_abstract_mesh()`, which the train and eval steps set. Off TPU it runs in
  Pallas' interpreter (slow; how tests check it on CPU).

`model.attention = 'auto'` resolves to the device's fused kernel (cudnn on CUDA GPUs, splash on
TPUs) where its `blockers` find nothing against it, and to `xla` otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from hyperx_jax import sharding
from hyperx_jax.config.vocabulary import (
    ATTENTION_CHOICES,
    ATTENTION_IMPLEMENTATIONS,
    AUTO_ATTENTION,
    CUDNN_ATTENTION,
    SPLASH_ATTENTION,
    TENSOR_AXIS,
    XLA_ATTENTION,
)

FLASH_CAPABILITY = (8, 0)  # cuDNN flash attention: Ampere and later
WIDE_HEADS_CAPABILITY = (9, 0)  # Hopper and later: head dims up to 256 (else 128)
SPLASH_BLOCK = 128  # splash attention's query and key block (its default BlockSizes)


@dataclasses.dataclass(frozen=True)
class Device:
  """What decides whether cuDNN attention runs: jax's platform ('cpu', 'gpu', 'tpu'), the
  device kind ('NVIDIA H100 80GB HBM3') and, on CUDA GPUs only, the compute capability."""

  platform: str
  kind: str = ""
  compute_capability: Optional[str] = None  # '9.0'; None: not a CUDA GPU (CPU, TPU, ROCm)


def local_device() -> Device:
  """This process's first device."""
  d = jax.local_devices()[0]
  cuda = d.platform == "gpu" and "cuda" in d.client.platform_version.lower()  # not ROCm
  return Device(d.platform, d.device_kind, getattr(d, "compute_capability", None) if cuda else None)


def _capability(device: Device) -> tuple[int, ...]:
  return tuple(int(x) for x in device.compute_capability.split("."))


def cudnn_blockers(
    device: Device,
    *,
    dtype: str,
    head_dim: Optional[int] = None,
    max_length: Optional[int] = None,
    packed: bool = False,
) -> list[str]:
  """Why cuDNN attention cannot run (empty: it can). `dtype`: the compute dtype; a None
  head_dim / max_length is not checked (unknown yet)."""
  if device.compute_capability is None:
    return [
        f"cuDNN attention needs an NVIDIA GPU; this process runs on {device.platform} "
        f"({device.kind or 'unknown device'})"
    ]
  blockers = []
  capability = _capability(device)
  if capability < FLASH_CAPABILITY:
    blockers.append(
        f"cuDNN flash attention needs compute capability >= "
        f"{'.'.join(map(str, FLASH_CAPABILITY))}; {device.kind} has "
        f"{device.compute_capability}"
    )
  if dtype != "bfloat16":
    blockers.append(
        f"cuDNN attention takes bfloat16 inputs; the compute dtype is {dtype!r} "
        "(config.model.dtype)"
    )
  widest = 256 if capability >= WIDE_HEADS_CAPABILITY else 128
  if head_dim is not None and (head_dim % 8 or head_dim > widest):
    blockers.append(
        f"cuDNN attention needs a head dim that is a multiple of 8 and at most "
        f"{widest} on {device.kind}; this encoder's is {head_dim}"
    )
  if packed and max_length is not None and max_length % 2:
    blockers.append(
        f"packed rows reach cuDNN as a mask (an additive bias), which it trains "
        f"with only at even sequence lengths; data.max_length is {max_length}"
    )
  return blockers


def splash_blockers(device: Device, *, max_length: Optional[int] = None) -> list[str]:
  """Why splash attention cannot run (empty: it can); a None max_length is not checked."""
  blockers = []
  if device.platform != "tpu":
    blockers.append(
        f"splash attention is a TPU kernel; this process runs on {device.platform} "
        f"({device.kind or 'unknown device'})"
    )
  if max_length is not None and max_length % SPLASH_BLOCK:
    blockers.append(
        f"splash attention tiles the sequence in blocks of {SPLASH_BLOCK}; "
        f"data.max_length is {max_length}"
    )
  return blockers


def blockers(
    kernel: str,
    device: Device,
    *,
    dtype: str,
    head_dim: Optional[int] = None,
    max_length: Optional[int] = None,
    packed: bool = False,
) -> list[str]:
  """Why the fused `kernel` ('cudnn' or 'splash') cannot run on `device` (empty: it can)."""
  if kernel == SPLASH_ATTENTION:
    return splash_blockers(device, max_length=max_length)
  return cudnn_blockers(
      device, dtype=dtype, head_dim=head_dim, max_length=max_length, packed=packed
  )


def fused_kernel(device: Device) -> str:
  """The fused kernel 'auto' tries on `device`: splash on TPUs, cudnn elsewhere."""
  return SPLASH_ATTENTION if device.platform == "tpu" else CUDNN_ATTENTION


def resolve(
    choice: str,
    device: Device,
    *,
    dtype: str,
    head_dim: int,
    max_length: Optional[int] = None,
    packed: bool = False,
    attention_dropout: float = 0.0,
    strict: bool = True,
) -> str:
  """model.attention -> one of ATTENTION_IMPLEMENTATIONS for `device` (logged once).

  'auto' is the device's fused kernel (`fused_kernel`) where its `blockers` are empty, else
  xla. An explicit fused kernel that cannot run raises ValueError naming the reasons; with
  `strict=False` (a trained run restored on another machine) it falls back to xla with a
  warning: the kernel does not change the parameters, only the rounding. With attention
  dropout, training calls keep the explicit dropout path whatever the kernel (validation
  refuses an explicit fused kernel with dropout)."""
  if choice not in ATTENTION_CHOICES:
    raise ValueError(f"attention {choice!r} is not one of {ATTENTION_CHOICES}")
  if choice == XLA_ATTENTION:
    return XLA_ATTENTION
  kernel = fused_kernel(device) if choice == AUTO_ATTENTION else choice
  reasons = blockers(
      kernel, device, dtype=dtype, head_dim=head_dim, max_length=max_length, packed=packed
  )
  if choice != AUTO_ATTENTION and reasons and strict:
    raise ValueError(f"config.model.attention: {choice!r} cannot run here: " + "; ".join(reasons))
  chosen = XLA_ATTENTION if reasons else kernel
  why = "; ".join(reasons) or f"{dtype}, head dim {head_dim}, {device.kind}"
  if chosen != XLA_ATTENTION and attention_dropout:
    why += f"; attention dropout {attention_dropout}: training steps keep the dropout path"
  _log_once(
      logging.WARNING if choice != AUTO_ATTENTION else logging.INFO,
      f"attention: {choice!r} -> {chosen!r} ({why})",
  )
  return chosen


@functools.lru_cache(maxsize=None)
def _log_once(level: int, message: str) -> None:
  logging.log(level, "%s", message)


# ----------------------------------------------------------------------------- the call


class AttentionMask(NamedTuple):
  """Which keys each query sees, in the forms the kernels take.

  dense:    [B, 1, 1 or S, S] bool, True = attend (xla, cudnn on packed rows, the dropout
            path)
  lengths:  [B] int32, real tokens of each right-padded row (cudnn on one sentence per row);
            None where the dense mask is the one to use
  segments: [B, S] int32 (splash): a query sees the keys of its own segment id; 0 = padding
  """

  dense: jax.Array
  lengths: Optional[jax.Array] = None
  segments: Optional[jax.Array] = None


def row_lengths(attention_mask: jax.Array) -> jax.Array:
  """[B, S] 0/1 -> [B] int32 real tokens per row, at least 1 (an all-padding row, as the last
  eval batch holds, then attends to its first position instead of to nothing)."""
  return jnp.maximum(attention_mask.sum(axis=1), 1).astype(jnp.int32)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, implementation: str
) -> jax.Array:
  """softmax(q kᵀ / √D + mask) v per head. q, k, v: [B, S, N, D] -> [B, S, N, D]."""
  if implementation == XLA_ATTENTION:
    return jax.nn.dot_product_attention(q, k, v, mask=mask.dense, implementation="xla")
  if implementation == SPLASH_ATTENTION:
    return splash_attention(q, k, v, mask.segments)
  if implementation != CUDNN_ATTENTION:
    raise ValueError(
        f"attention implementation {implementation!r} is not one of "
        f"{ATTENTION_IMPLEMENTATIONS} ({AUTO_ATTENTION!r} is resolved before the "
        "model is built: attention.resolve)"
    )
  b, s = q.shape[:2]
  if mask.lengths is None:
    return jax.nn.dot_product_attention(
        q, k, v, mask=jnp.broadcast_to(mask.dense, (b, 1, s, s)), implementation="cudnn"
    )
  ctx = jax.nn.dot_product_attention(
      q,
      k,
      v,
      query_seq_lengths=mask.lengths,
      key_value_seq_lengths=mask.lengths,
      implementation="cudnn",
  )
  real = jnp.arange(s)[None, :] < mask.lengths[:, None]  # [B, S]
  return jnp.where(real[:, :, None, None], ctx, 0)  # rows past the length: cuDNN's to leave


def _splash_per_shard(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array) -> jax.Array:
  """Splash attention on local arrays: q, k, v [B, S, N, D], segments [B, S] -> [B, S, N, D]."""
  _, s, n, d = q.shape
  kernel = splash.make_splash_mha(
      splash_mask.MultiHeadMask([splash_mask.FullMask((s, s))] * n),
      head_shards=1,
      q_seq_shards=1,
      block_sizes=splash.BlockSizes.get_default(),
      interpret=jax.default_backend() != "tpu",
  )
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [B, S, N, D] <-> [B, N, S, D]
  ids = splash.SegmentIds(q=segments, kv=segments)
  ctx = jax.vmap(kernel)(
      heads_first(q * d**-0.5), heads_first(k), heads_first(v), segment_ids=ids
  )  # the kernel does not scale q
  return heads_first(ctx).astype(q.dtype)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array) -> jax.Array:
  """The splash kernel, inside `jax.shard_map` when a mesh of several devices is set (a
  Pallas kernel is not partitioned by XLA): rows over the data axes, heads over 'tensor'
  where it divides them; sequence and head dim whole."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return _splash_per_shard(q, k, v, segments)
  rows = sharding.batch_axes(mesh)
  heads = (
      TENSOR_AXIS
      if TENSOR_AXIS in mesh.axis_names and q.shape[2] % mesh.shape[TENSOR_AXIS] == 0
      else None
  )
  qkv = PartitionSpec(rows, None, heads, None)
  return jax.shard_map(
      _splash_per_shard,
      mesh=mesh,
      in_specs=(qkv, qkv, qkv, PartitionSpec(rows, None)),
      out_specs=qkv,
      check_vma=False,
  )(q, k, v, segments)
