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

`model.attention = 'auto'` resolves to `cudnn` where `cudnn_blockers` finds nothing against it
and to `xla` otherwise. TPUs run `xla`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from hyperx_jax.schema import (ATTENTION_CHOICES, ATTENTION_IMPLEMENTATIONS, AUTO_ATTENTION,
                               CUDNN_ATTENTION, XLA_ATTENTION)

FLASH_CAPABILITY = (8, 0)  # cuDNN flash attention: Ampere and later
WIDE_HEADS_CAPABILITY = (9, 0)  # Hopper and later: head dims up to 256 (else 128)


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
  return Device(d.platform, d.device_kind,
                getattr(d, "compute_capability", None) if cuda else None)


def _capability(device: Device) -> tuple[int, ...]:
  return tuple(int(x) for x in device.compute_capability.split("."))


def cudnn_blockers(device: Device, *, dtype: str, head_dim: Optional[int] = None,
                   max_length: Optional[int] = None, packed: bool = False) -> list[str]:
  """Why cuDNN attention cannot run (empty: it can). `dtype`: the compute dtype; a None
  head_dim / max_length is not checked (unknown yet)."""
  if device.compute_capability is None:
    return [f"cuDNN attention needs an NVIDIA GPU; this process runs on {device.platform} "
            f"({device.kind or 'unknown device'})"]
  blockers = []
  capability = _capability(device)
  if capability < FLASH_CAPABILITY:
    blockers.append(f"cuDNN flash attention needs compute capability >= "
                    f"{'.'.join(map(str, FLASH_CAPABILITY))}; {device.kind} has "
                    f"{device.compute_capability}")
  if dtype != "bfloat16":
    blockers.append(f"cuDNN attention takes bfloat16 inputs; the compute dtype is {dtype!r} "
                    "(config.model.dtype)")
  widest = 256 if capability >= WIDE_HEADS_CAPABILITY else 128
  if head_dim is not None and (head_dim % 8 or head_dim > widest):
    blockers.append(f"cuDNN attention needs a head dim that is a multiple of 8 and at most "
                    f"{widest} on {device.kind}; this encoder's is {head_dim}")
  if packed and max_length is not None and max_length % 2:
    blockers.append(f"packed rows reach cuDNN as a mask (an additive bias), which it trains "
                    f"with only at even sequence lengths; data.max_length is {max_length}")
  return blockers


def resolve(choice: str, device: Device, *, dtype: str, head_dim: int,
            max_length: Optional[int] = None, packed: bool = False,
            attention_dropout: float = 0.0, strict: bool = True) -> str:
  """model.attention -> one of ATTENTION_IMPLEMENTATIONS for `device` (logged once).

  'auto' is cudnn where `cudnn_blockers` is empty, else xla. An explicit 'cudnn' that cannot
  run raises ValueError naming the reasons; with `strict=False` (a trained run restored on
  another machine) it falls back to xla with a warning: the kernel does not change the
  parameters, only the rounding. With attention dropout, training calls keep the explicit
  dropout path whatever the kernel (validation refuses an explicit 'cudnn' with dropout)."""
  if choice not in ATTENTION_CHOICES:
    raise ValueError(f"attention {choice!r} is not one of {ATTENTION_CHOICES}")
  if choice == XLA_ATTENTION:
    return XLA_ATTENTION
  blockers = cudnn_blockers(device, dtype=dtype, head_dim=head_dim, max_length=max_length,
                            packed=packed)
  if choice == CUDNN_ATTENTION and blockers and strict:
    raise ValueError("config.model.attention: 'cudnn' cannot run here: " + "; ".join(blockers))
  chosen = XLA_ATTENTION if blockers else CUDNN_ATTENTION
  why = "; ".join(blockers) or f"bfloat16, head dim {head_dim}, {device.kind}"
  if chosen == CUDNN_ATTENTION and attention_dropout:
    why += f"; attention dropout {attention_dropout}: training steps keep the dropout path"
  _log_once(logging.WARNING if choice == CUDNN_ATTENTION else logging.INFO,
            f"attention: {choice!r} -> {chosen!r} ({why})")
  return chosen


@functools.lru_cache(maxsize=None)
def _log_once(level: int, message: str) -> None:
  logging.log(level, "%s", message)


# ----------------------------------------------------------------------------- the call


class AttentionMask(NamedTuple):
  """Which keys each query sees, in the forms the kernels take.

  dense:   [B, 1, 1 or S, S] bool, True = attend (xla, cudnn on packed rows, the dropout path)
  lengths: [B] int32, real tokens of each right-padded row (cudnn on one sentence per row);
           None where the dense mask is the one to use
  """

  dense: jax.Array
  lengths: Optional[jax.Array] = None


def row_lengths(attention_mask: jax.Array) -> jax.Array:
  """[B, S] 0/1 -> [B] int32 real tokens per row, at least 1 (an all-padding row, as the last
  eval batch holds, then attends to its first position instead of to nothing)."""
  return jnp.maximum(attention_mask.sum(axis=1), 1).astype(jnp.int32)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask,
                          implementation: str) -> jax.Array:
  """softmax(q kᵀ / √D + mask) v per head. q, k, v: [B, S, N, D] -> [B, S, N, D]."""
  if implementation == XLA_ATTENTION:
    return jax.nn.dot_product_attention(q, k, v, mask=mask.dense, implementation="xla")
  if implementation != CUDNN_ATTENTION:
    raise ValueError(f"attention implementation {implementation!r} is not one of "
                     f"{ATTENTION_IMPLEMENTATIONS} ({AUTO_ATTENTION!r} is resolved before the "
                     "model is built: attention.resolve)")
  b, s = q.shape[:2]
  if mask.lengths is None:
    return jax.nn.dot_product_attention(q, k, v, mask=jnp.broadcast_to(mask.dense, (b, 1, s, s)),
                                        implementation="cudnn")
  ctx = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=mask.lengths,
                                     key_value_seq_lengths=mask.lengths, implementation="cudnn")
  real = jnp.arange(s)[None, :] < mask.lengths[:, None]  # [B, S]
  return jnp.where(real[:, :, None, None], ctx, 0)  # rows past the length: cuDNN's to leave
