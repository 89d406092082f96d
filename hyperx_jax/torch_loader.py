"""An export (`python -m hyperx_jax.export`) as a PyTorch module on plain `transformers`; no JAX.

    from hyperx_jax.torch_loader import load_exported
    model = load_exported("out/ner_tr")          # base checkpoint: the one adapter_config.json names
    out = model(input_ids, attention_mask)       # out.logits, out.hidden_states [B, S, H]

The model is `transformers.XLMRobertaModel` (the base checkpoint) with

- the trained backbone parameters (`backbone.safetensors`, its own state_dict names) loaded;
- the adapter stack inserted where models/xlmr.py puts it. `placement='ffn_output'`: HF's
  `XLMRobertaOutput` computes LayerNorm(dropout(dense(h)) + a); its `dropout` becomes
  Sequential(dropout, adapters), so the adapters see the FFN output after dropout and before the
  residual and LayerNorm, as ours. `placement='layer_output'`: the adapters follow the whole
  `XLMRobertaOutput` (after its LayerNorm);
- the task head: pair (`cls` or `mean` pooling, dense, tanh, out_proj) or token (one dense).

Each adapter is A(z) = LN(U · ReLU(D · z + bD) + bU) + z with the adapter LN's eps from the
config (1e-5). `adapter_forward` (the adapter body) and `place_adapters` (the placement) also
serve weights that are not stored, such as generated ones (benchmarks/torch_bench.py). Only
post-LayerNorm encoders (`model_type` xlm-roberta / roberta) are built here. This module
imports torch, transformers and safetensors, never jax or flax (the package's `__init__` imports
flax only when it is installed).
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Optional, Sequence

import torch
import transformers
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from hyperx_jax import export_format
from hyperx_jax.config.vocabulary import PAIR, PLACEMENTS, TOKEN


def adapter_forward(z: torch.Tensor, w: Mapping[str, torch.Tensor], eps: float) -> torch.Tensor:
  """A(z) = LN(ReLU(z · D + bD) · U + bU) + z, z [B, S, h]. `w` in our layout: down [h, b],
  up [b, h] ([in, out]), down_bias [b], up_bias [h], and ln_scale / ln_bias [h] when the adapter
  has its LayerNorm (`eps` is its epsilon)."""
  out = F.linear(torch.relu(F.linear(z, w["down"].T, w["down_bias"])), w["up"].T, w["up_bias"])
  if w.get("ln_scale") is not None:
    out = F.layer_norm(out, out.shape[-1:], w["ln_scale"], w["ln_bias"], eps)
  return out + z


class Adapter(nn.Module):
  """One layer's bottleneck adapter: A(z) = LN(up(ReLU(down(z)))) + z."""

  def __init__(self, tensors: dict[str, torch.Tensor], eps: float):
    super().__init__()
    hidden, bottleneck = tensors["down"].shape  # ours: [in, out]
    self.eps = eps
    self.down = nn.Linear(hidden, bottleneck)
    self.up = nn.Linear(bottleneck, hidden)
    self.ln = nn.LayerNorm(hidden, eps=eps) if "ln_scale" in tensors else None
    with torch.no_grad():
      self.down.weight.copy_(tensors["down"].T)
      self.down.bias.copy_(tensors["down_bias"])
      self.up.weight.copy_(tensors["up"].T)
      self.up.bias.copy_(tensors["up_bias"])
      if self.ln is not None:
        self.ln.weight.copy_(tensors["ln_scale"])
        self.ln.bias.copy_(tensors["ln_bias"])

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    w = {
        "down": self.down.weight.T,
        "down_bias": self.down.bias,
        "up": self.up.weight.T,
        "up_bias": self.up.bias,
    }
    if self.ln is not None:
      w.update(ln_scale=self.ln.weight, ln_bias=self.ln.bias)
    return adapter_forward(z, w, self.eps)


class AfterOutput(nn.Module):
  """placement='layer_output': an `XLMRobertaOutput` followed by the adapters."""

  def __init__(self, output: nn.Module, adapters: nn.Module):
    super().__init__()
    self.output, self.adapters = output, adapters

  def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
    return self.adapters(self.output(hidden_states, input_tensor))


class PairHead(nn.Module):
  """Pool (`<s>` or the mean over real tokens), dense H->H, tanh, out_proj H->n."""

  def __init__(self, hidden: int, num_labels: int, pooling: str):
    super().__init__()
    self.pooling = pooling
    self.dense = nn.Linear(hidden, hidden)
    self.out_proj = nn.Linear(hidden, num_labels)

  def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if self.pooling == "cls":
      pooled = hidden[:, 0]
    else:
      m = mask.to(hidden.dtype)[..., None]
      pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return self.out_proj(torch.tanh(self.dense(pooled)))


class TokenHead(nn.Module):
  """One dense layer on every token."""

  def __init__(self, hidden: int, num_labels: int):
    super().__init__()
    self.out = nn.Linear(hidden, num_labels)

  def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    del mask
    return self.out(hidden)


class Output(NamedTuple):
  logits: torch.Tensor  # pair [B, n]; token [B, S, n]
  hidden_states: torch.Tensor  # the adapted encoder's last layer [B, S, H]


class ExportedModel(nn.Module):
  """Encoder (+ adapters, trained backbone) and head of one exported (task, language)."""

  def __init__(self, encoder: transformers.XLMRobertaModel, head: nn.Module, config: dict):
    super().__init__()
    self.encoder, self.head, self.config = encoder, head, config

  def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Output:
    hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return Output(self.head(hidden, attention_mask), hidden)


def _layer_adapters(tensors: dict[str, torch.Tensor], config: dict, layer: int) -> nn.Sequential:
  """Layer `layer`'s adapters, in stack order."""
  stack = []
  for k in range(config["num_adapters"]):
    prefix = export_format.adapter_tensor(k, "")
    fields = {
        name[len(prefix) :]: value[layer]
        for name, value in tensors.items()
        if name.startswith(prefix)
    }
    stack.append(Adapter(fields, config["adapter_ln_eps"]))
  return nn.Sequential(*stack)


def place_adapters(
    encoder: transformers.XLMRobertaModel, stacks: Sequence[nn.Module], placement: str
) -> None:
  """Puts `stacks[i]` (a module z [B, S, H] -> [B, S, H]) into layer i at `placement`:
  'ffn_output' or 'layer_output' (see the module docstring)."""
  layers = encoder.encoder.layer
  if len(stacks) != len(layers):
    raise ValueError(f"{len(stacks)} adapter stacks for {len(layers)} encoder layers")
  for layer, adapters in zip(layers, stacks):
    if placement == "ffn_output":
      layer.output.dropout = nn.Sequential(layer.output.dropout, adapters)
    elif placement == "layer_output":
      layer.output = AfterOutput(layer.output, adapters)
    else:
      raise ValueError(f"unknown adapter placement {placement!r}; known: {', '.join(PLACEMENTS)}")


def insert_adapters(
    encoder: transformers.XLMRobertaModel, tensors: dict[str, torch.Tensor], config: dict
) -> None:
  """Puts each layer's exported adapter stack at the export's placement."""
  stacks = [_layer_adapters(tensors, config, i) for i in range(len(encoder.encoder.layer))]
  try:
    place_adapters(encoder, stacks, config["placement"])
  except ValueError as e:
    raise ValueError(f"{export_format.CONFIG_FILE}: {e}") from None


def build_head(tensors: dict[str, torch.Tensor], config: dict) -> nn.Module:
  """The task head with the exported weights (ours are [in, out], torch's [out, in])."""
  hidden, num_labels, kind = config["hidden_size"], len(config["labels"]), config["task_kind"]
  if kind == PAIR:
    head = PairHead(hidden, num_labels, config["pooling"])
  elif kind == TOKEN:
    head = TokenHead(hidden, num_labels)
  else:
    raise ValueError(
        f"{export_format.CONFIG_FILE}: task kind {config['task_kind']!r} has no PyTorch "
        f"head here (pair and token classification only)"
    )
  with torch.no_grad():
    for name in export_format.HEAD_LAYERS[kind]:
      linear = getattr(head, name)
      linear.weight.copy_(tensors[export_format.head_tensor(name, "kernel")].T)
      linear.bias.copy_(tensors[export_format.head_tensor(name, "bias")])
  return head


def load_backbone(encoder: nn.Module, export_dir: str, config: dict) -> None:
  """The trained backbone parameters into `encoder` (a base `XLMRobertaModel`), in one call."""
  if not config["backbone_file"]:
    return
  result = encoder.load_state_dict(
      load_file(os.path.join(export_dir, config["backbone_file"])), strict=False
  )
  if result.unexpected_keys:
    raise ValueError(
        f"{export_dir}: {config['backbone_file']} has tensors the base encoder "
        f"lacks: {result.unexpected_keys}"
    )


def load_exported(
    export_dir: str,
    base_checkpoint_dir: Optional[str] = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> ExportedModel:
  """The exported (task, language) as an `ExportedModel` in eval mode. `base_checkpoint_dir`:
  the Hugging Face checkpoint the run started from (default: the one the export names)."""
  config = export_format.read_config(export_dir)
  base = base_checkpoint_dir or config["checkpoint"]
  encoder = transformers.XLMRobertaModel.from_pretrained(base, add_pooling_layer=False, dtype=dtype)
  if getattr(encoder.config, "model_type", "") not in ("xlm-roberta", "roberta"):
    raise ValueError(
        f"{base}: model_type {encoder.config.model_type!r}; the PyTorch loader "
        "builds post-LayerNorm XLM-R / RoBERTa encoders only"
    )
  load_backbone(encoder, export_dir, config)
  tensors = load_file(os.path.join(export_dir, export_format.ADAPTER_FILE))
  insert_adapters(encoder, tensors, config)
  model = ExportedModel(encoder, build_head(tensors, config), config)
  return model.to(dtype).eval()
