"""HyperXModel: the frozen XLM-R encoder, an adapter source per method, one head per task.

Methods (docs/method.md, "Baselines"):

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
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hyperx_jax import typology
from hyperx_jax.config.sections import TaskSpec
from hyperx_jax.config.vocabulary import METHODS, MLM, PAIR, TOKEN
from hyperx_jax.models.adapters import AdapterWeights
from hyperx_jax.models.heads import MLMHead, SequenceClassificationHead, TokenClassificationHead
from hyperx_jax.models.hypernet import HyperNetConfig, HyperNetwork
from hyperx_jax.models.static import StaticAdapters
from hyperx_jax.models.xlmr import EncoderConfig, XLMREncoder


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that decides the model's parameters and forward pass."""

  method: str
  encoder: EncoderConfig
  hypernet: HyperNetConfig
  tasks: tuple[TaskSpec, ...]  # ids are positions
  languages: tuple[str, ...]
  classifier_dropout: float = 0.1


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

  def __init__(
      self,
      encoder_config: EncoderConfig,
      tasks: Mapping[str, TaskSpec],
      languages: list[str],
      method: str,
      hypernet_config: HyperNetConfig,
      *,
      classifier_dropout: float = 0.1,
      rngs: nnx.Rngs,
  ):
    """`tasks`: name -> TaskSpec in id order."""
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
    static = dict(
        num_layers=c.num_layers,
        hidden_size=c.hidden_size,
        bottleneck=hc.bottleneck,
        layer_norm=hc.conditional_layer_norm,
        init_std=hc.init_std,
        param_dtype=dtype,
        rngs=rngs,
    )
    if method == "hyperx":
      features = (
          typology.feature_matrix(languages, hc.typology_features) if hc.typology else None
      )  # z [Lg, F]
      self.adapters = HyperNetwork(
          hc,
          hidden_size=c.hidden_size,
          num_layers=c.num_layers,
          num_tasks=len(tasks),
          num_languages=len(languages),
          param_dtype=dtype,
          rngs=rngs,
          language_features=features,
      )
    elif method == "task_adapters":
      self.adapters = StaticAdapters(len(tasks), unit_axis="tasks", **static)
    elif method == "madx":
      self.adapters = MadXAdapters(len(tasks), len(languages), **static)
    else:
      self.adapters = None
    self.heads = nnx.Dict(
        {name: _make_head(spec, c, classifier_dropout, dtype, rngs) for name, spec in tasks.items()}
    )

  def task_id(self, task: str) -> int:
    return _index(task, self.task_names, "task")

  def task_kind(self, task: str) -> str:
    return self.tasks[self.task_names[self.task_id(task)]].kind

  def lang_id(self, language: str) -> int:
    return _index(language, self.languages, "language")

  def adapter_weights(
      self, task_ids: jax.Array, lang_ids: jax.Array, *, skip_task_adapter: bool = False
  ) -> tuple[AdapterWeights, ...]:
    """task_ids, lang_ids: [G] -> the method's adapter stack, leaves [L, G, ...]."""
    if self.method == "hyperx":
      return (self.adapters(task_ids, lang_ids),)
    if self.method == "task_adapters":
      return (self.adapters(task_ids),)
    if self.method == "madx":
      lang = self.adapters.language(lang_ids)
      return (lang,) if skip_task_adapter else (lang, self.adapters.task(task_ids))
    return ()

  def encode(
      self,
      batch: Mapping[str, jax.Array],
      task: str,
      *,
      dropout_rng: Optional[jax.Array] = None,
      mixed_pairs: bool = False,
  ) -> jax.Array:
    """The adapted encoder's hidden states [B, S, H]."""
    task_ids, lang_ids = batch["task_id"], batch["lang_id"]
    group_ids = None
    if mixed_pairs:  # one group per example
      group_ids = jnp.arange(task_ids.shape[0])
    else:  # one (task, language) pair per batch: generate once
      task_ids, lang_ids = task_ids[:1], lang_ids[:1]
    is_mlm = self.task_kind(task) == MLM
    adapters = self.adapter_weights(task_ids, lang_ids, skip_task_adapter=is_mlm)
    return self.encoder(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("token_type_ids"),
        adapters=adapters,
        group_ids=group_ids,
        dropout_rng=dropout_rng,
        segment_ids=batch.get("segment_ids"),
    )

  def __call__(
      self,
      batch: Mapping[str, jax.Array],
      task: str,
      *,
      dropout_rng: Optional[jax.Array] = None,
      mlm_positions: Optional[jax.Array] = None,
      mixed_pairs: bool = False,
      num_segments: int = 0,
  ) -> jax.Array:
    """Logits: pair [B, n]; token [B, S, n]; mlm [B, K, V] at `mlm_positions` [B, K].

    Packed rows (`segment_ids` in the batch): pair logits [B, num_segments, n], one row per
    segment slot; token and mlm logits keep their shapes.
    """
    enc_rng = head_rng = None
    if dropout_rng is not None:
      enc_rng, head_rng = jax.random.split(dropout_rng)
    hidden = self.encode(batch, task, dropout_rng=enc_rng, mixed_pairs=mixed_pairs)
    head = self.heads[task]
    if isinstance(head, MLMHead):
      if mlm_positions is None:
        raise ValueError(f"task {task!r} is mlm: pass mlm_positions [B, K]")
      return head(hidden, mlm_positions, self.encoder.embeddings.word[...])
    if isinstance(head, SequenceClassificationHead):
      return head(
          hidden,
          dropout_rng=head_rng,
          mask=batch["attention_mask"],
          segment_ids=batch.get("segment_ids"),
          num_segments=num_segments,
      )
    return head(hidden, dropout_rng=head_rng)


def build_model(spec: ModelConfig, *, rngs: nnx.Rngs) -> HyperXModel:
  """A randomly initialised model (the pretrained encoder weights are loaded by the caller)."""
  return HyperXModel(
      spec.encoder,
      {t.name: t for t in spec.tasks},
      list(spec.languages),
      spec.method,
      spec.hypernet,
      classifier_dropout=spec.classifier_dropout,
      rngs=rngs,
  )


def _make_head(spec: TaskSpec, c: EncoderConfig, dropout_rate: float, dtype, rngs: nnx.Rngs):
  if spec.kind == PAIR:
    return SequenceClassificationHead(
        c.hidden_size,
        spec.num_labels,
        dropout_rate=dropout_rate,
        pooling=spec.pooling,
        param_dtype=dtype,
        rngs=rngs,
    )
  if spec.kind == TOKEN:
    return TokenClassificationHead(
        c.hidden_size, spec.num_labels, dropout_rate=dropout_rate, param_dtype=dtype, rngs=rngs
    )
  return MLMHead(
      c.hidden_size, c.vocab_size, layer_norm_eps=c.layer_norm_eps, param_dtype=dtype, rngs=rngs
  )
