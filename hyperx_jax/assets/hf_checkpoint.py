"""e5 tensors -> a Hugging Face `XLMRobertaModel` checkpoint directory, and its sanity check.

The directory holds config.json, model.safetensors, tokenizer.json, tokenizer_config.json and
special_tokens_map.json.
"""

from __future__ import annotations

import os

import numpy as np

from hyperx_jax.assets.common import AssetError, write_json
from hyperx_jax.assets.e5_q4 import E5Header, read_e5_bin

PAD_OFFSET = 2  # RoBERTa position ids start at padding_idx + 1


def hf_tensor_names(layers: int) -> dict[str, str]:
  """e5 tensor name -> Hugging Face `XLMRobertaModel` parameter name."""
  names = {
      "emb.word": "embeddings.word_embeddings.weight",
      "emb.pos": "embeddings.position_embeddings.weight",
      "emb.type": "embeddings.token_type_embeddings.weight",
      "emb.ln.w": "embeddings.LayerNorm.weight",
      "emb.ln.b": "embeddings.LayerNorm.bias",
  }
  parts = {
      "q": "attention.self.query",
      "k": "attention.self.key",
      "v": "attention.self.value",
      "ao": "attention.output.dense",
      "aln": "attention.output.LayerNorm",
      "fi": "intermediate.dense",
      "fo": "output.dense",
      "oln": "output.LayerNorm",
  }
  for i in range(layers):
    for short, long in parts.items():
      names[f"l{i}.{short}.w"] = f"encoder.layer.{i}.{long}.weight"
      names[f"l{i}.{short}.b"] = f"encoder.layer.{i}.{long}.bias"
  return names


def hf_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
  """The `XLMRobertaModel` parameter shapes (PyTorch Linear weights are [out, in])."""
  shapes = {
      "embeddings.word_embeddings.weight": (h.vocab, h.hidden),
      "embeddings.position_embeddings.weight": (h.max_positions + PAD_OFFSET, h.hidden),
      "embeddings.token_type_embeddings.weight": (h.type_vocab, h.hidden),
  }
  linear = {
      "attention.self.query": (h.hidden, h.hidden),
      "attention.self.key": (h.hidden, h.hidden),
      "attention.self.value": (h.hidden, h.hidden),
      "attention.output.dense": (h.hidden, h.hidden),
      "intermediate.dense": (h.ffn, h.hidden),
      "output.dense": (h.hidden, h.ffn),
  }
  norms = ["embeddings.LayerNorm"] + [
      f"encoder.layer.{i}.{n}"
      for i in range(h.layers)
      for n in ("attention.output.LayerNorm", "output.LayerNorm")
  ]
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
      value = np.concatenate([np.zeros((PAD_OFFSET, h.hidden), np.float32), value.reshape(shape)])
      shape = value.shape
    if value.size != np.prod(shape):
      raise AssetError(f"e5 tensor {short!r} has {value.size} values, expected {shape} for {long}")
    state[long] = np.ascontiguousarray(value.reshape(shape), dtype=np.float32)
  return state


def hf_config(h: E5Header) -> dict:
  return {
      "architectures": ["XLMRobertaModel"],
      "model_type": "xlm-roberta",
      "vocab_size": h.vocab,
      "hidden_size": h.hidden,
      "num_hidden_layers": h.layers,
      "num_attention_heads": h.heads,
      "intermediate_size": h.ffn,
      "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1,
      "attention_probs_dropout_prob": 0.1,
      "max_position_embeddings": h.max_positions + PAD_OFFSET,
      "type_vocab_size": h.type_vocab,
      "layer_norm_eps": h.eps,
      "initializer_range": 0.02,
      "position_embedding_type": "absolute",
      "pad_token_id": h.pad,
      "bos_token_id": h.bos,
      "eos_token_id": h.eos,
      "torch_dtype": "float32",
  }


TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "model_max_length": 512,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def write_tokenizer_files(out_dir: str, tokenizer_json: bytes) -> None:
  """tokenizer.json as given, plus the XLM-R tokenizer_config.json and special_tokens_map.json."""
  with open(os.path.join(out_dir, "tokenizer.json"), "wb") as f:
    f.write(tokenizer_json)
  write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)
  write_json(
      os.path.join(out_dir, "special_tokens_map.json"),
      {k: v for k, v in TOKENIZER_CONFIG.items() if k.endswith("_token")},
  )


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
  write_tokenizer_files(out_dir, tokenizer_json)
  return state


def check_checkpoint(ckpt_dir: str) -> int:
  """Cheap sanity check: transformers reads the config; safetensors shapes match; returns #params."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  from transformers import AutoConfig  # pylint: disable=g-import-not-at-top

  cfg = AutoConfig.from_pretrained(ckpt_dir)
  h = E5Header(
      cfg.hidden_size,
      cfg.num_hidden_layers,
      cfg.num_attention_heads,
      cfg.intermediate_size,
      cfg.vocab_size,
      cfg.max_position_embeddings - PAD_OFFSET,
      cfg.type_vocab_size,
      cfg.layer_norm_eps,
      0,
      0,
      0,
      cfg.pad_token_id,
      0,
  )
  want = hf_shapes(h)
  with safe_open(os.path.join(ckpt_dir, "model.safetensors"), "np") as f:
    got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
  if got != want:
    diff = sorted(set(got.items()) ^ set(want.items()))[:6]
    raise AssetError(f"{ckpt_dir}: checkpoint shapes differ from the config: {diff}")
  return sum(int(np.prod(s)) for s in got.values())
