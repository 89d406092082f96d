"""Tiny random Hugging Face XLM-R checkpoints (transformers + torch), for end-to-end tests."""

from __future__ import annotations

import pathlib
import shutil
from typing import Optional, Union

import torch
import transformers


def tiny_xlmr_config(
    *,
    layer_norm_eps: float = 1e-5,
    type_vocab_size: int = 1,
    vocab_size: int = 100,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    max_positions: int = 130,
    xl: bool = False,
):
  """An XLM-R config (`xl`: the pre-LayerNorm XLM-R XL/XXL architecture)."""
  cls = transformers.XLMRobertaXLConfig if xl else transformers.XLMRobertaConfig
  return cls(
      vocab_size=vocab_size,
      hidden_size=hidden,
      num_hidden_layers=layers,
      num_attention_heads=heads,
      intermediate_size=intermediate,
      max_position_embeddings=max_positions,
      type_vocab_size=type_vocab_size,
      layer_norm_eps=layer_norm_eps,
      pad_token_id=1,
      bos_token_id=0,
      eos_token_id=2,
      hidden_act="gelu",
  )


def _model_class(mlm: bool, xl: bool):
  if xl:
    return transformers.XLMRobertaXLForMaskedLM if mlm else transformers.XLMRobertaXLModel
  return transformers.XLMRobertaForMaskedLM if mlm else transformers.XLMRobertaModel


def make_tiny_xlmr_model(*, mlm: bool = False, seed: int = 0, **config_kwargs):
  """A random torch `XLMRobertaModel` (or `...ForMaskedLM`, or the XL classes) in eval mode.

  Every weight, LayerNorm parameters and biases included, is random so that a wrong mapping
  cannot pass a parity test by accident.
  """
  torch.manual_seed(seed)
  model = _model_class(mlm, config_kwargs.get("xl", False))(tiny_xlmr_config(**config_kwargs))
  with torch.no_grad():
    for name, p in model.named_parameters():
      is_ln_scale = name.endswith(("LayerNorm.weight", "layer_norm.weight"))
      p.copy_(torch.randn_like(p) * (0.2 if p.ndim > 1 else 0.1) + float(is_ln_scale))
  return model.eval()


def make_tiny_xlmr_checkpoint(
    directory: Union[str, pathlib.Path],
    *,
    mlm: bool = False,
    layer_norm_eps: float = 1e-5,
    type_vocab_size: int = 1,
    vocab_size: int = 100,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    seed: int = 0,
    tokenizer_json: Optional[Union[str, pathlib.Path]] = None,
    max_positions: int = 130,
    max_shard_size: Optional[str] = None,
    safe_serialization: bool = True,
    xl: bool = False,
) -> pathlib.Path:
  """Writes `config.json` + `model.safetensors` (sharded with an index when `max_shard_size`
  is given, `pytorch_model.bin` when `safe_serialization=False`) to `directory`; optionally
  copies a `tokenizer.json` next to them. Returns the directory."""
  directory = pathlib.Path(directory)
  model = make_tiny_xlmr_model(
      mlm=mlm,
      seed=seed,
      layer_norm_eps=layer_norm_eps,
      type_vocab_size=type_vocab_size,
      vocab_size=vocab_size,
      hidden=hidden,
      layers=layers,
      heads=heads,
      intermediate=intermediate,
      max_positions=max_positions,
      xl=xl,
  )
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  if safe_serialization:
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
  else:  # transformers 5 writes safetensors only; the legacy format is a plain state dict
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
  if tokenizer_json is not None:
    shutil.copy(tokenizer_json, directory / "tokenizer.json")
  return directory


def load_torch_model(directory: Union[str, pathlib.Path], *, mlm: bool = False, xl: bool = False):
  return _model_class(mlm, xl).from_pretrained(directory).eval()
