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

A batch holds `groups` (task, language) pairs in equal blocks of contiguous rows (one task; the
pipeline's `data.groups_per_batch`), so the adapters are generated once per group: from the
ids of each block's first row, G = groups, and row b reads group b // (B / G). `groups=1` is
the paper's one pair per batch; `groups=B` one pair per example. Labelling a file in many
languages passes its own `adapters` (generated once per language) and `group_ids`.
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
      groups: int = 1,
      adapters: Optional[tuple[AdapterWeights, ...]] = None,
      group_ids: Optional[jax.Array] = None,
  ) -> jax.Array:
    """The adapted encoder's hidden states [B, S, H]. `groups` (static): the batch's rows
    are that many equal blocks, each one (task, language) pair; or `adapters` [L, G, ...] given
    with the `group_ids` [B] of each row."""
    if adapters is None:
      task_ids, lang_ids = batch["task_id"], batch["lang_id"]
      rows = task_ids.shape[0] // groups
      if rows * groups != task_ids.shape[0]:
        raise ValueError(f"{task_ids.shape[0]} rows do not split into {groups} equal groups")
      task_ids, lang_ids = task_ids[::rows], lang_ids[::rows]  # each block's first row
      group_ids = None if groups == 1 else jnp.arange(rows * groups) // rows
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
      groups: int = 1,
      num_segments: int = 0,
      adapters: Optional[tuple[AdapterWeights, ...]] = None,
      group_ids: Optional[jax.Array] = None,
  ) -> jax.Array:
    """Logits: pair [B, n]; token [B, S, n]; mlm [B, K, V] at `mlm_positions` [B, K].

    Packed rows (`segment_ids` in the batch): pair logits [B, num_segments, n], one row per
    segment slot; token and mlm logits keep their shapes.
    """
    enc_rng = head_rng = None
    if dropout_rng is not None:
      enc_rng, head_rng = jax.random.split(dropout_rng)
    hidden = self.encode(
        batch, task, dropout_rng=enc_rng, groups=groups, adapters=adapters, group_ids=group_ids
    )
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
