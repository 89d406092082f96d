"""Helpers the tests share (fixtures are in conftest.py): a tiny workspace (a random XLM-R
checkpoint, a word-level tokenizer and small data files) with its config, and small readers.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import struct

import jax
import numpy as np
from flax import nnx
from tensorboardX.proto import event_pb2

from hyperx_jax.models.adapters import apply_adapter_stack

from configs import tiny
from hf_fixtures import make_tiny_xlmr_checkpoint

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
NUM_WORDS = 90
LANGS = ("aa", "bb", "cc")


def word_tag(word: str) -> str:
  """The learnable rule of the tiny tagging task: the tag is the word's number mod 3."""
  return f"T{int(word[1:]) % 3}"


def write_tokenizer(directory: pathlib.Path) -> None:
  """A whitespace word-level tokenizer with XLM-R's special tokens and templates."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors

  vocab = {
      t: i for i, t in enumerate(SPECIALS + tuple(f"w{i}" for i in range(NUM_WORDS)) + ("<mask>",))
  }
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.post_processor = processors.TemplateProcessing(
      single="<s> $A </s>",
      pair="<s> $A </s> </s> $B </s>",
      special_tokens=[("<s>", 0), ("</s>", 2)],
  )
  tok.save(str(directory / "tokenizer.json"))


def _sentence(rng: random.Random, lang: str, span: int = 50) -> list[str]:
  # Each language uses its own, overlapping slice of the vocabulary.
  offset = (span // 2) * LANGS.index(lang)
  return [f"w{rng.randrange(offset, offset + span)}" for _ in range(rng.randint(3, 8))]


def write_data(data: pathlib.Path, n_train: int = 64, n_test: int = 16) -> None:
  data.mkdir(parents=True, exist_ok=True)
  rng = random.Random(0)
  for lang in LANGS:
    for split, n in (("train", n_train), ("test", n_test)):
      # Tagging draws from 12 words per language, so 20 steps can learn their tags.
      sents = [_sentence(rng, lang, span=12) for _ in range(n)]
      (data / f"tag_{lang}_{split}.iob2").write_text(
          "\n\n".join("\n".join(f"{w}\t{word_tag(w)}" for w in s) for s in sents) + "\n"
      )
      rows = []
      for s in sents:
        same = rng.random() < 0.5
        other = s if same else _sentence(rng, lang)
        rows.append(
            json.dumps(
                {
                    "premise": " ".join(s),
                    "hypothesis": " ".join(other),
                    "label": "same" if same else "diff",
                }
            )
        )
      (data / f"pair_{lang}_{split}.jsonl").write_text("\n".join(rows) + "\n")
    (data / f"mlm_{lang}.txt").write_text(
        "\n".join(" ".join(_sentence(rng, lang)) for _ in range(n_train)) + "\n"
    )


def make_workspace(root: pathlib.Path) -> pathlib.Path:
  """checkpoint/ (tiny random XLM-R), tokenizer/ and data/ under `root`."""
  make_tiny_xlmr_checkpoint(
      root / "checkpoint",
      vocab_size=len(SPECIALS) + NUM_WORDS + 1,
      hidden=32,
      layers=2,
      heads=4,
      intermediate=64,
      max_positions=40,
  )
  (root / "tokenizer").mkdir(parents=True, exist_ok=True)
  write_tokenizer(root / "tokenizer")
  write_data(root / "data")
  return root


def tiny_config(workspace: pathlib.Path, **arg):
  spec = ",".join(f"{k}={v}" for k, v in {"workspace": str(workspace), **arg}.items())
  return tiny.get_config(spec)


def run_dir(tmp_path, name="run") -> str:
  return str(tmp_path / name)


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def flat_params(state) -> dict[str, np.ndarray]:
  """'/'-joined path -> host copy of every nnx.Param in `state` (copied: steps donate)."""
  return {
      "/".join(str(k) for k in path): np.array(var.get_value())
      for path, var in nnx.to_flat_state(state)
      if isinstance(var, nnx.Param)
  }


@jax.jit
def per_layer_outputs(w, z):
  """Every layer's adapter applied to z: [L, B, S, H]."""
  return jax.vmap(lambda layer_w: apply_adapter_stack((layer_w,), z))(w)


def _crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = _crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
  """TFRecord framing (length, masked CRC32C, payload, masked CRC32C) -> Event protos."""
  data, events, pos = path.read_bytes(), [], 0
  while pos < len(data):
    header = data[pos : pos + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == _masked_crc(header)
    payload = data[pos + 12 : pos + 12 + length]
    assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == _masked_crc(
        payload
    )
    events.append(event_pb2.Event.FromString(payload))
    pos += 16 + length
  return events
