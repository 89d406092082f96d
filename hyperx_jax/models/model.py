"""HyperXModel: the frozen XLM-R encoder, an adapter source per method, one head per task.

Methods (DESIGN.md §1, "Baselines"):

  hyperx         adapters = HyperNetwork; weights = (hypernet(task, lang),)
  task_adapters  adapters = StaticAdapters over tasks; weights = (task adapter,)
  madx           adapters = {language: StaticAdapters over languages, task: ... over tasks};
                 weights = (language adapter, task adapter): the language adapter sits under the
                 task adapter. For the `mlm` task the task adapter is skipped, so masked-LM
                 trains the language adapters only (MAD-X).
  full_finetune  no adapters; the trainer's rules make the whole backbone trainable.

All adapter parameters live under `adapters/…` and heads under `heads/<task>/…`, so the
trainable regex rules are the same for every method.

A training batch holds one (task, language) pair, so the adapters are generated once per batch
(G = 1, from `task_id[:1], lang_id[:1]`). `mixed_pairs=True` generates one adapter set per
example (G = B) for batches that mix pairs.

MLM loss: the positions with labels != -100 are gathered to a fixed K = `mlm_num_predictions(S)`
= ceil(0.15·S) + 1 per example (a static-size top-k selection, in position order). The
featuriser masks at most 15 % of the tokens, so nothing is dropped; any masked positions beyond
K would be counted in aux["mlm_dropped"] and left out of the loss.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import pathlib
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from hyperx_jax.models import weights
from hyperx_jax.models.adapters import AdapterWeights
from hyperx_jax.models.heads import (MLMHead, SequenceClassificationHead,
                                     TokenClassificationHead)
from hyperx_jax.models.hypernet import HyperNetConfig, HyperNetwork
from hyperx_jax.models.static import StaticAdapters
from hyperx_jax.models.xlmr import EncoderConfig, XLMREncoder

METHODS = ("hyperx", "task_adapters", "madx", "full_finetune")
TASK_KINDS = ("pair_classification", "token_classification", "mlm")
IGNORE = -100
MLM_RATE = 0.15


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task's kind and label count (unused for mlm: the vocabulary is the label set)."""

  kind: str
  num_labels: int = 0

  def __post_init__(self):
    if self.kind not in TASK_KINDS:
      raise ValueError(f"unknown task kind {self.kind!r}; known: {', '.join(TASK_KINDS)}")
    if self.kind != "mlm" and self.num_labels < 1:
      raise ValueError(f"a {self.kind} task needs num_labels >= 1, got {self.num_labels}")


def mlm_num_predictions(seq_len: int) -> int:
  """K: the fixed number of MLM positions scored per example."""
  return math.ceil(MLM_RATE * seq_len) + 1


def _index(name: str, known: list[str], what: str) -> int:
  if name not in known:
    raise KeyError(f"unknown {what} {name!r}; known: {', '.join(known)}")
  return known.index(name)


class MadXAdapters(nnx.Module):
  """MAD-X: language adapters (trained by MLM) under task adapters."""

  def __init__(self, num_tasks: int, num_languages: int, **kwargs):
    self.language = StaticAdapters(num_languages, unit_axis="languages", **kwargs)
    self.task = StaticAdapters(num_tasks, unit_axis="tasks", **kwargs)


class HyperXModel(nnx.Module):
  """Encoder + adapter source of `method` + one head per task."""

  def __init__(self, encoder_config: EncoderConfig, tasks: Mapping[str, TaskSpec],
               languages: list[str], method: str, hypernet_config: HyperNetConfig, *,
               classifier_dropout: float = 0.1, rngs: nnx.Rngs):
    if method not in METHODS:
      raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if not tasks or not languages:
      raise ValueError(f"need at least one task and one language, got {list(tasks)}, {languages}")
    self.method = method
    self.tasks = dict(tasks)
    self.task_names = list(tasks)
    self.languages = list(languages)
    self.encoder = XLMREncoder(encoder_config, rngs=rngs)
    c, hc = encoder_config, hypernet_config
    dtype = jnp.dtype(c.param_dtype)
    static = dict(num_layers=c.num_layers, hidden_size=c.hidden_size, bottleneck=hc.bottleneck,
                  layer_norm=hc.conditional_layer_norm, init_std=hc.init_std, param_dtype=dtype,
                  rngs=rngs)
    if method == "hyperx":
      self.adapters = HyperNetwork(hc, hidden_size=c.hidden_size, num_layers=c.num_layers,
                                   num_tasks=len(tasks), num_languages=len(languages),
                                   param_dtype=dtype, rngs=rngs)
    elif method == "task_adapters":
      self.adapters = StaticAdapters(len(tasks), unit_axis="tasks", **static)
    elif method == "madx":
      self.adapters = MadXAdapters(len(tasks), len(languages), **static)
    else:
      self.adapters = None
    self.heads = nnx.Dict({name: _make_head(spec, c, classifier_dropout, dtype, rngs)
                           for name, spec in tasks.items()})

  def load_mlm_heads(self, checkpoint: str | pathlib.Path) -> None:
    """The checkpoint's `lm_head.*` into every MLM head (fresh init + a warning when absent).

    Call after `weights.load_encoder_weights`: the decoder is tied to `embeddings.word`.
    """
    tensors = weights.load_mlm_head_weights(checkpoint)
    for head in self.heads.values():
      if isinstance(head, MLMHead):
        head.load_hf(tensors)

  def task_id(self, task: str) -> int:
    return _index(task, self.task_names, "task")

  def task_kind(self, task: str) -> str:
    return self.tasks[self.task_names[self.task_id(task)]].kind

  def lang_id(self, language: str) -> int:
    return _index(language, self.languages, "language")

  def adapter_weights(self, task_ids: jax.Array, lang_ids: jax.Array, *,
                      skip_task_adapter: bool = False) -> tuple[AdapterWeights, ...]:
    """task_ids, lang_ids: [G] -> the method's adapter stack, leaves [L, G, ...]."""
    if self.method == "hyperx":
      return (self.adapters(task_ids, lang_ids),)
    if self.method == "task_adapters":
      return (self.adapters(task_ids),)
    if self.method == "madx":
      lang = self.adapters.language(lang_ids)
      return (lang,) if skip_task_adapter else (lang, self.adapters.task(task_ids))
    return ()

  def encode(self, batch: Mapping[str, jax.Array], task: str, *,
             dropout_rng: Optional[jax.Array] = None, mixed_pairs: bool = False) -> jax.Array:
    """The adapted encoder's hidden states [B, S, H]."""
    task_ids, lang_ids = batch["task_id"], batch["lang_id"]
    group_ids = None
    if mixed_pairs:  # one group per example
      group_ids = jnp.arange(task_ids.shape[0])
    else:  # one (task, language) pair per batch: generate once
      task_ids, lang_ids = task_ids[:1], lang_ids[:1]
    is_mlm = self.task_kind(task) == "mlm"
    adapters = self.adapter_weights(task_ids, lang_ids, skip_task_adapter=is_mlm)
    return self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                        adapters=adapters, group_ids=group_ids, dropout_rng=dropout_rng)

  def __call__(self, batch: Mapping[str, jax.Array], task: str, *,
               dropout_rng: Optional[jax.Array] = None, mlm_positions: Optional[jax.Array] = None,
               mixed_pairs: bool = False) -> jax.Array:
    """Logits: pair [B, n]; token [B, S, n]; mlm [B, K, V] at `mlm_positions` [B, K]."""
    enc_rng = head_rng = None
    if dropout_rng is not None:
      enc_rng, head_rng = jax.random.split(dropout_rng)
    hidden = self.encode(batch, task, dropout_rng=enc_rng, mixed_pairs=mixed_pairs)
    head = self.heads[task]
    if isinstance(head, MLMHead):
      if mlm_positions is None:
        raise ValueError(f"task {task!r} is mlm: pass mlm_positions [B, K]")
      return head(hidden, mlm_positions, self.encoder.embeddings.word[...])
    return head(hidden, dropout_rng=head_rng)


def _make_head(spec: TaskSpec, c: EncoderConfig, dropout_rate: float, dtype, rngs: nnx.Rngs):
  if spec.kind == "pair_classification":
    return SequenceClassificationHead(c.hidden_size, spec.num_labels, dropout_rate=dropout_rate,
                                      param_dtype=dtype, rngs=rngs)
  if spec.kind == "token_classification":
    return TokenClassificationHead(c.hidden_size, spec.num_labels, dropout_rate=dropout_rate,
                                   param_dtype=dtype, rngs=rngs)
  return MLMHead(c.hidden_size, c.vocab_size, layer_norm_eps=c.layer_norm_eps, param_dtype=dtype,
                 rngs=rngs)


# --------------------------------------------------------------------------------- losses


def select_mlm_positions(labels: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """labels [B, S] -> (positions [B, K], labels at them [B, K] (-100 = padding), dropped [B]).

  The first K masked positions of each row, in order (static size: top-k of a position score).
  """
  seq = labels.shape[1]
  masked = labels != IGNORE  # [B, S]
  score = jnp.where(masked, seq - jnp.arange(seq), 0)  # earlier masked positions score higher
  top, positions = jax.lax.top_k(score, k)  # [B, K]
  picked = jnp.take_along_axis(labels, positions, axis=1)
  picked = jnp.where(top > 0, picked, IGNORE)
  dropped = jnp.maximum(masked.sum(-1) - k, 0)
  return positions.astype(jnp.int32), picked, dropped


def _targets(model: HyperXModel, batch: Mapping[str, jax.Array], task: str,
             dropout_rng: Optional[jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array, dict]:
  """(logits [..., n], labels [...], weights [...], extra aux) for any task kind."""
  kind = model.task_kind(task)
  labels = batch["labels"]
  extra = {}
  if kind == "mlm":
    positions, labels, dropped = select_mlm_positions(labels, mlm_num_predictions(labels.shape[1]))
    logits = model(batch, task, dropout_rng=dropout_rng, mlm_positions=positions)
    extra["mlm_dropped"] = dropped.sum()
  else:
    logits = model(batch, task, dropout_rng=dropout_rng)
  example_mask = batch.get("example_mask")
  weights = labels != IGNORE
  if example_mask is not None:
    weights &= example_mask.astype(bool).reshape(example_mask.shape + (1,) * (labels.ndim - 1))
  return logits, labels, weights, extra


def compute_loss(model: HyperXModel, batch: Mapping[str, jax.Array], task: str,
                 dropout_rng: Optional[jax.Array] = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean cross-entropy over non-ignored labels of real examples; aux: count, accuracy."""
  logits, labels, weights, aux = _targets(model, batch, task, dropout_rng)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  safe = jnp.where(weights, labels, 0)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  count = weights.sum()
  denom = jnp.maximum(count, 1).astype(jnp.float32)
  loss = jnp.where(weights, nll, 0.0).sum() / denom
  correct = ((logits.argmax(-1) == safe) & weights).sum()
  aux.update(loss=loss, count=count, correct=correct, accuracy=correct / denom)
  return loss, aux


def predict(model: HyperXModel, batch: Mapping[str, jax.Array], task: str) -> jax.Array:
  """Argmax predictions: pair [B]; token [B, S]; mlm [B, K] at `select_mlm_positions`."""
  if model.task_kind(task) == "mlm":
    labels = batch["labels"]
    positions, _, _ = select_mlm_positions(labels, mlm_num_predictions(labels.shape[1]))
    logits = model(batch, task, mlm_positions=positions)
  else:
    logits = model(batch, task)
  return logits.argmax(-1).astype(jnp.int32)


# ------------------------------------------------------------------------- parameter report


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", p)) for p in path)


def parameter_report(model: nnx.Module, trainable_filter: Optional[Callable[..., bool]] = None) -> str:
  """A table of total / trainable parameter counts per module (first two path components).

  `trainable_filter` is either `f(name)` on the '/'-joined parameter path or an NNX-style
  predicate `f(path, variable)` (as `optim.trainable_filter` returns); None = all trainable.
  """
  two_args = (trainable_filter is not None
              and len(inspect.signature(trainable_filter).parameters) == 2)
  rows: dict[str, list[int]] = {}
  for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = _path_str(path)
    group = "/".join(name.split("/")[:2])
    size = int(np.prod(leaf.shape))
    if trainable_filter is None:
      trainable = True
    else:
      trainable = trainable_filter(path, leaf) if two_args else trainable_filter(name)
    row = rows.setdefault(group, [0, 0])
    row[0] += size
    row[1] += size if trainable else 0
  total = sum(r[0] for r in rows.values())
  trainable = sum(r[1] for r in rows.values())
  width = max([len(g) for g in rows] + [len("module")])
  lines = [f"{'module':<{width}}  {'total':>14}  {'trainable':>14}", "-" * (width + 32)]
  lines += [f"{g:<{width}}  {t:>14,}  {tr:>14,}" for g, (t, tr) in rows.items()]
  lines += ["-" * (width + 32), f"{'all':<{width}}  {total:>14,}  {trainable:>14,}"]
  return "\n".join(lines)


# ----------------------------------------------------------------------------------- config


def _get(config: Any, dotted: str, default: Any = None) -> Any:
  node = config
  for key in dotted.split("."):
    if node is None or key not in node:
      return default
    node = node[key]
  return node


def task_specs(config: ml_collections.ConfigDict) -> dict[str, TaskSpec]:
  """config.tasks (ordered name -> {kind, labels}) -> TaskSpecs."""
  specs = {}
  for name, task in config.tasks.items():
    kind = task["kind"]
    labels = task.get("labels") if hasattr(task, "get") else None
    if kind != "mlm" and not labels:
      raise ValueError(f"config.tasks.{name}: kind {kind!r} needs a non-empty 'labels' list")
    try:
      specs[name] = TaskSpec(kind=kind, num_labels=0 if kind == "mlm" else len(labels))
    except ValueError as e:
      raise ValueError(f"config.tasks.{name}: {e}") from None
  return specs


def encoder_config(config: ml_collections.ConfigDict) -> EncoderConfig:
  """config.model (+ config.adapter.placement) -> EncoderConfig."""
  overrides = {k: _get(config, f"model.{k}") for k in (
      "dtype", "param_dtype", "scan_layers", "remat", "hidden_dropout", "attention_dropout")}
  overrides["adapter_placement"] = _get(config, "adapter.placement")
  overrides = {k: v for k, v in overrides.items() if v is not None}
  checkpoint = _get(config, "model.checkpoint")
  if checkpoint:
    return EncoderConfig.from_hf(_hf_config(checkpoint), **overrides)
  return EncoderConfig.preset(_get(config, "model.preset", "base"), **overrides)


def _hf_config(checkpoint: str) -> Any:
  """A local dir's config.json, else the hub id's config through transformers."""
  if pathlib.Path(checkpoint).exists():
    return checkpoint
  import transformers
  return transformers.AutoConfig.from_pretrained(checkpoint).to_dict()


def hypernet_config(config: ml_collections.ConfigDict) -> HyperNetConfig:
  """config.hyperx + config.adapter -> HyperNetConfig."""
  fields = {f.name for f in dataclasses.fields(HyperNetConfig)}
  kwargs = {k: v for k, v in (_get(config, "hyperx") or {}).items() if k in fields}
  bottleneck, layer_norm = _get(config, "adapter.bottleneck"), _get(config, "adapter.layer_norm")
  if bottleneck is not None:
    kwargs["bottleneck"] = bottleneck
  if layer_norm is not None:
    kwargs["conditional_layer_norm"] = layer_norm
  return HyperNetConfig(**kwargs)


def build_model(config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> HyperXModel:
  """A randomly initialised HyperXModel from a trainer config (see docs/architecture.md)."""
  return HyperXModel(encoder_config(config), task_specs(config), list(config.languages),
                     config.method, hypernet_config(config),
                     classifier_dropout=_get(config, "model.classifier_dropout", 0.1), rngs=rngs)
