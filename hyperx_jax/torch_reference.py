"""Hyper-X's train step in PyTorch: the independent reference our JAX step is checked against.

`TorchModel` is `transformers.XLMRobertaModel` with the run's adapters hooked in where
models/xlmr.py puts them (`torch_loader.place_adapters`, computed by
`torch_loader.adapter_forward`), a hypernetwork that generates them from (task, language,
layer) embeddings (docs/method.md, sections 2-4) or static per-task tables, and the token head.
`torch_tensors` / `ours_from_torch` map our parameters to its names and layouts and back (the
encoder's through the XLMRobertaModel name map of `models/weights.py`); `torch_optimizer` is
our optimiser as torch.optim.AdamW param groups with our schedule.

tests/test_torch_bench.py checks at a tiny shape that the first steps' loss, gradients and
updated parameters agree with ours; `benchmarks/torch_bench.py` times the two side by side.
This module imports both JAX (our parameters, optimiser rules) and PyTorch.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import transformers
from flax import nnx
from torch import nn
from torch.nn import functional as F

from hyperx_jax import export_format, optim, torch_loader
from hyperx_jax.config import RunSpec
from hyperx_jax.models import weights
from hyperx_jax.models.adapters import adapter_shapes
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.model import ModelConfig
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.tree import flat_paths, path_str

ENCODER, ADAPTERS = "encoder/", "adapters/"


# ------------------------------------------------------------------------ the name map


def our_params(state: Any) -> dict[str, np.ndarray]:
  """The `nnx.Param`s of a state, path -> numpy array."""
  return {
      path_str(p): np.asarray(v.get_value())
      for p, v in nnx.to_flat_state(state)
      if isinstance(v, nnx.Param)
  }


def _torch_name(path: str) -> tuple[str, bool]:
  """A head or adapter path -> (PyTorch name, transposed?): a head's `kernel` [in, out] is
  torch's `weight` [out, in]; adapters keep our names (`/` -> `.`) and layouts."""
  name = path.replace("/", ".")
  if path.startswith("heads/") and path.endswith("/kernel"):
    return name[: -len("kernel")] + "weight", True
  return name, False


def torch_tensors(
    params: Mapping[str, np.ndarray], encoder: EncoderConfig
) -> dict[str, np.ndarray]:
  """Our parameters (path -> array) under the PyTorch model's names and layouts; the encoder's
  by the XLMRobertaModel name map (`weights.to_hf_tensors`), one tensor per layer."""
  backbone = {p[len(ENCODER) :]: v for p, v in params.items() if p.startswith(ENCODER)}
  out = {f"encoder.{n}": v for n, v in weights.to_hf_tensors(backbone, encoder).items()}
  for path, value in params.items():
    if not path.startswith(ENCODER):
      name, transposed = _torch_name(path)
      out[name] = value.T if transposed else value
  return out


def ours_from_torch(
    tensors: Mapping[str, np.ndarray], like: Mapping[str, Any], encoder: EncoderConfig
) -> dict[str, np.ndarray]:
  """The inverse of `torch_tensors`: the PyTorch tensors of exactly the paths of `like` (path ->
  array of our shape) -> path -> array in our layout."""
  hf = {n[len("encoder.") :]: v for n, v in tensors.items() if n.startswith("encoder.")}
  backbone = {p[len(ENCODER) :]: v for p, v in like.items() if p.startswith(ENCODER)}
  out = {ENCODER + p: v for p, v in weights.from_hf_tensors(hf, encoder, backbone).items()}
  for path in like:
    if not path.startswith(ENCODER):
      name, transposed = _torch_name(path)
      out[path] = tensors[name].T if transposed else tensors[name]
  return out


# ------------------------------------------------------------------------ the PyTorch model


class WeightSlot:
  """This step's adapter weights (name -> [L, ...]): set by `TorchModel.forward`, read by every
  layer's `LayerAdapter`."""

  def __init__(self):
    self.weights: dict[str, torch.Tensor] = {}


class LayerAdapter(nn.Module):
  """Layer `layer`'s adapter A(z) with this step's weights."""

  def __init__(self, slot: WeightSlot, layer: int):
    super().__init__()
    self.slot, self.layer = slot, layer

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    w = {name: value[self.layer] for name, value in self.slot.weights.items()}
    return torch_loader.adapter_forward(z, w, export_format.ADAPTER_LN_EPS)


def _empty(shape: tuple[int, ...]) -> nn.Parameter:
  return nn.Parameter(torch.empty(shape))


class HyperNet(nn.Module):
  """The hypernetwork for one (task, language) pair, every layer at once (docs/method.md 2-4):

  s = [task ; lang ; layer_i]                       [L, source]
  p = ReLU(s · W1 + b1) · W2 + b2                    [L, P]
  X_i = reshape(p · K_X + g_X)                       [L, *shape_X] per adapter tensor X
  """

  def __init__(self, shapes: Mapping[str, tuple[int, ...]], adapter_shapes: Mapping[str, tuple]):
    """`shapes`: our `adapters/…` parameter shapes without the prefix; `adapter_shapes`: one
    layer's adapter tensor shapes (`adapters.adapter_shapes`)."""
    super().__init__()
    self.task_embeddings = _empty(shapes["task_embeddings"])  # [T, dt]
    self.lang_embeddings = _empty(shapes["lang_embeddings"])  # [Λ, dl]
    self.layer_embeddings = _empty(shapes["layer_embeddings"])  # [L, di]
    self.projector = nn.ParameterDict(
        {
            k: _empty(shapes[f"projector/{k}"])
            for k in ("hidden_kernel", "hidden_bias", "out_kernel", "out_bias")
        }
    )
    self.generators = nn.ModuleDict(
        {
            name: nn.ParameterDict(
                {part: _empty(shapes[f"generators/{name}/{part}"]) for part in ("kernel", "bias")}
            )
            for name in adapter_shapes
        }
    )
    self.adapter_shapes = dict(adapter_shapes)

  def forward(self, task_ids: torch.Tensor, lang_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch's pair is (task_ids[0], lang_ids[0]) -> name -> [L, *shape]."""
    layers = self.layer_embeddings.shape[0]
    s = torch.cat(
        [
            self.task_embeddings[task_ids[:1]].expand(layers, -1),
            self.lang_embeddings[lang_ids[:1]].expand(layers, -1),
            self.layer_embeddings,
        ],
        dim=-1,
    )  # [L, source]
    pj = self.projector
    hidden = torch.relu(torch.addmm(pj["hidden_bias"], s, pj["hidden_kernel"]))
    p = torch.addmm(pj["out_bias"], hidden, pj["out_kernel"])  # [L, P]
    return {
        name: torch.addmm(g["bias"], p, g["kernel"]).view(layers, *self.adapter_shapes[name])
        for name, g in self.generators.items()
    }


class StaticTables(nn.Module):
  """`task_adapters`: stored adapters, tables [T, L, *shape]; the batch's task's rows."""

  def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
    super().__init__()
    self.names = tuple(shapes)
    for name, shape in shapes.items():
      self.register_parameter(name, _empty(shape))

  def forward(self, task_ids: torch.Tensor, lang_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    del lang_ids
    return {name: getattr(self, name)[task_ids[0]] for name in self.names}


class TorchModel(nn.Module):
  """XLMRobertaModel + the adapter source of the run's method + the token head; parameters are
  named as `torch_tensors` names ours, so `load_state_dict(torch_tensors(…))` fills them all."""

  def __init__(self, model: ModelConfig, task: str, shapes: Mapping[str, tuple[int, ...]]):
    """`model`: our model's configuration (one token `task`); `shapes`: every parameter of our
    model, path -> shape."""
    super().__init__()
    enc, hc = model.encoder, model.hypernet
    self.encoder_config = enc
    self.encoder = transformers.XLMRobertaModel(
        transformers.XLMRobertaConfig(**enc.to_hf()), add_pooling_layer=False
    )
    adapter = {p[len(ADAPTERS) :]: s for p, s in shapes.items() if p.startswith(ADAPTERS)}
    if model.method == "hyperx":
      _check_default_hyperx(hc)
      self.adapters = HyperNet(
          adapter, adapter_shapes(enc.hidden_size, hc.bottleneck, hc.conditional_layer_norm)
      )
    else:
      self.adapters = StaticTables(adapter)
    labels = {t.name: t.num_labels for t in model.tasks}[task]
    self.task = task
    self.heads = nn.ModuleDict({task: torch_loader.TokenHead(enc.hidden_size, labels)})
    self.classifier_dropout = model.classifier_dropout
    self.slot = WeightSlot()
    torch_loader.place_adapters(
        self.encoder,
        [LayerAdapter(self.slot, i) for i in range(enc.num_layers)],
        enc.adapter_placement,
    )

  def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits [B, S, n]."""
    self.slot.weights = self.adapters(batch["task_id"], batch["lang_id"])
    hidden = self.encoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
    ).last_hidden_state
    hidden = F.dropout(hidden, self.classifier_dropout, self.training)
    return self.heads[self.task](hidden, batch["attention_mask"])


def _check_default_hyperx(hc: HyperNetConfig) -> None:
  """The PyTorch hypernetwork is the default one: learned language rows, layer embeddings, a
  source projector read as it is (no unit projection)."""
  if (
      hc.language_source != "learned"
      or not hc.condition_on_layer
      or not hc.use_projector
      or hc.mean_languages
      or hc.unit_projection
  ):
    raise ValueError(
        f"torch_bench mirrors the default Hyper-X only (learned language rows, "
        f"layer conditioning, projector, no unit projection), not {hc}"
    )


# ------------------------------------------------------------------------ the optimiser


def torch_optimizer(
    model: TorchModel, spec: RunSpec, trainable: Any
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
  """Our optimiser as AdamW param groups, one per (lr multiplier, decayed?) pair, and a
  LambdaLR on our schedule (`optim.learning_rate_fn`); `trainable`: our trainable state."""
  o = spec.optim
  if o.per_task_state or o.per_task_grad_norm:
    raise ValueError("torch_bench mirrors one shared Adam state (recipe=paper)")
  params = our_params(trainable)
  multipliers = flat_paths(optim.lr_multipliers(o.lr_multipliers, trainable))
  decayed = flat_paths(optim.decay_mask(trainable))
  groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
  for path, value in params.items():
    names = torch_tensors({path: value}, model.encoder_config)
    groups.setdefault((multipliers[path], decayed[path]), []).extend(
        model.get_parameter(n) for n in names
    )
  optimizer = torch.optim.AdamW(
      [
          {"params": ps, "lr": o.lr * m, "weight_decay": o.weight_decay if d else 0.0}
          for (m, d), ps in groups.items()
      ],
      lr=o.lr,
      betas=(o.b1, o.b2),
      eps=o.eps,
      fused=True,
  )
  schedule = optim.learning_rate_fn(o, spec.total_steps)
  rates = np.asarray(schedule(np.arange(spec.total_steps + 1))) / o.lr
  schedule = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda i: float(rates[min(i, len(rates) - 1)])
  )
  return optimizer, schedule


def torch_batch(local: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
  return {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in local.items()}
