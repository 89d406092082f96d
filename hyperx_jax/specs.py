"""The config boundary: a raw `ConfigDict` is checked once and becomes a frozen `RunSpec`.

    spec = specs.parse(config, jax.device_count())

`parse` runs `validation.check_config` (every bad field reported at once, before anything is
built) and then `decode`s each section into the typed specs of `schema` and `models`. Every module
after this point takes a spec, never the ConfigDict; the ConfigDict itself is kept only to be
saved verbatim in the run directory (`config.json`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from hyperx_jax import validation
from hyperx_jax.models import attention
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.model import ModelSpec
from hyperx_jax.models.weights import encoder_config_from_checkpoint
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.schema import (AUTO_ATTENTION, DEV, MLM, PACKING_OFF, TEST, CheckpointSpec,
                               DataSpec, MeshSpec, OptimSpec, Pair, StreamSpec, TaskSpec)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run, decoded: what to build, what to read, how to train and evaluate."""

  seed: int
  model: ModelSpec
  pretrained: Optional[str]  # HF checkpoint (hub id or local dir) of the encoder, or None
  tokenizer: str
  train_streams: tuple[StreamSpec, ...]
  eval_streams: tuple[StreamSpec, ...]
  data: DataSpec
  optim: OptimSpec
  trainable: tuple[tuple[str, bool], ...]  # (regex, trainable), first match wins
  mesh: MeshSpec
  checkpoint: CheckpointSpec
  total_steps: int
  log_every_steps: int
  eval_every_steps: int
  init_from: Optional[str] = None
  new_languages: tuple[str, ...] = ()
  new_language_init: str = 'mean'
  diagnostics: bool = False  # log diagnostics.py's measurements every step

  @property
  def method(self) -> str:
    return self.model.method

  @property
  def tasks(self) -> dict[str, TaskSpec]:
    """name -> TaskSpec, in id order."""
    return {t.name: t for t in self.model.tasks}

  @property
  def languages(self) -> tuple[str, ...]:
    return self.model.languages

  @property
  def dev_streams(self) -> tuple[StreamSpec, ...]:
    """Evaluated during training; `checkpoint.best_metric` selects among their scores."""
    return tuple(s for s in self.eval_streams if s.role == DEV)

  @property
  def test_streams(self) -> tuple[StreamSpec, ...]:
    """Evaluated once, on the selected checkpoint."""
    return tuple(s for s in self.eval_streams if s.role == TEST)

  def zero_shot_pairs(self) -> set[Pair]:
    """Eval pairs with no training stream of their own (zero-shot transfer)."""
    return {s.pair for s in self.eval_streams} - {s.pair for s in self.train_streams}

  def mlm_only_languages(self) -> set[str]:
    """Languages whose only training data is masked-LM text."""
    kinds: dict[str, set[str]] = {}
    for s in self.train_streams:
      kinds.setdefault(s.lang, set()).add(s.kind)
    return {lang for lang, k in kinds.items() if k == {MLM}}


def _plain(value: Any) -> Any:
  """ConfigDict / FrozenConfigDict (possibly nested in lists) -> plain Python values."""
  if hasattr(value, 'to_dict'):
    return value.to_dict()
  if isinstance(value, (list, tuple)):
    return type(value)(_plain(v) for v in value)
  return value


def _rules(rules: Any) -> tuple[tuple[str, Any], ...]:
  return tuple((str(pattern), value) for pattern, value in rules or ())


def task_specs(config: Any) -> tuple[TaskSpec, ...]:
  return tuple(TaskSpec(name=name, kind=t['kind'], labels=tuple(t.get('labels') or ()),
                        metric=t.get('metric') or 'accuracy', pooling=t.get('pooling') or 'cls')
               for name, t in config.tasks.items())


def stream_specs(config: Any, field: str, tasks: Mapping[str, TaskSpec]) -> tuple[StreamSpec, ...]:
  names, languages = list(tasks), list(config.languages)
  specs = []
  for entry in config[field]:
    task = tasks[entry['task']]
    specs.append(StreamSpec(task=task.name, lang=entry['lang'], kind=task.kind,
                            labels=task.labels, task_id=names.index(task.name),
                            lang_id=languages.index(entry['lang']),
                            source=dict(_plain(entry['source'])),
                            max_examples=entry.get('max_examples'),
                            role=(entry.get('role') or DEV) if field == 'eval_streams' else None))
  return tuple(specs)


def encoder_config(config: Any, *, strict_attention: bool = True) -> EncoderConfig:
  """config.model (+ config.adapter.placement) -> EncoderConfig: sizes from the checkpoint's
  config.json (or the XLM-R preset without a checkpoint), options from the config, and
  model.attention resolved for this process's device (`attention.resolve`)."""
  m = config.model
  options = {k: m[k] for k in ('dtype', 'param_dtype', 'scan_layers', 'remat', 'hidden_dropout',
                               'attention_dropout') if m.get(k) is not None}
  options['adapter_placement'] = config.adapter.placement
  if m.checkpoint:
    encoder = encoder_config_from_checkpoint(m.checkpoint, **options)
  else:
    encoder = EncoderConfig.preset(m.get('preset', 'base'), **options)
  data = config.get('data') or {}  # a model-only config has none: lengths unchecked
  kernel = attention.resolve(m.get('attention', AUTO_ATTENTION), attention.local_device(),
                             dtype=encoder.dtype, head_dim=encoder.head_dim,
                             max_length=data.get('max_length'),
                             packed=data.get('packing', PACKING_OFF) != PACKING_OFF,
                             attention_dropout=encoder.attention_dropout,
                             strict=strict_attention)
  return dataclasses.replace(encoder, attention=kernel)


def untrained_languages(config: Any) -> list[str]:
  """Languages of config.languages that no training stream has (any task, MLM included)."""
  trained = {s['lang'] for s in config.train_streams}
  return [lang for lang in config.languages if lang not in trained]


def hypernet_config(config: Any) -> HyperNetConfig:
  """config.hyperx + config.adapter -> HyperNetConfig."""
  fields = {f.name for f in dataclasses.fields(HyperNetConfig)}
  hyperx = config.get('hyperx') or {}
  kwargs = {k: v for k, v in hyperx.items() if k in fields}
  if 'typology_features' in kwargs:
    kwargs['typology_features'] = tuple(kwargs['typology_features'])
  if hyperx.get('untrained_language', 'row') == 'mean':
    languages = list(config.languages)
    kwargs['mean_languages'] = tuple(languages.index(lang)
                                     for lang in untrained_languages(config))
  kwargs.update(bottleneck=config.adapter.bottleneck,
                conditional_layer_norm=config.adapter.get('layer_norm', True))
  return HyperNetConfig(**kwargs)


def data_spec(config: Any) -> DataSpec:
  d = config.data
  weights = d.get('weights')
  return DataSpec(max_length=int(d.max_length), batch_size=int(d.batch_size),
                  eval_batch_size=int(d.eval_batch_size),
                  temperature=float(d.get('temperature', 5.0)),
                  weights=None if weights is None else tuple(float(w) for w in weights),
                  prefetch=int(d.get('prefetch', 0)),
                  packing=int(d.get('packing', PACKING_OFF)),
                  packed_rows=int(d.get('packed_rows', 0)))


def model_spec(config: Any, *, strict_attention: bool = True) -> ModelSpec:
  return ModelSpec(method=config.method,
                   encoder=encoder_config(config, strict_attention=strict_attention),
                   hypernet=hypernet_config(config), tasks=task_specs(config),
                   languages=tuple(config.languages),
                   classifier_dropout=float(config.model.get('classifier_dropout', 0.1)))


def parse(config: Any, device_count: int) -> RunSpec:
  """Checks `config` (raising validation.ConfigError naming every bad field) and decodes it."""
  validation.check_config(config, device_count)
  return decode(config)


def decode(config: Any, *, strict_attention: bool = True) -> RunSpec:
  """The RunSpec of a config assumed valid (`parse` checks first; benchmarks that build a model
  without data streams call this directly). `strict_attention=False`: an explicit
  model.attention that cannot run on this device falls back to xla (`attention.resolve`)."""
  model = model_spec(config, strict_attention=strict_attention)
  tasks = {t.name: t for t in model.tasks}
  o, c = config.optim, config.checkpoint
  return RunSpec(
      seed=int(config.seed), model=model, pretrained=config.model.checkpoint or None,
      tokenizer=config.tokenizer or config.model.checkpoint,
      train_streams=stream_specs(config, 'train_streams', tasks),
      eval_streams=stream_specs(config, 'eval_streams', tasks),
      data=data_spec(config),
      optim=OptimSpec(lr=float(o.lr), warmup_steps=int(o.warmup_steps),
                      total_steps=int(config.total_steps),
                      weight_decay=float(o.weight_decay), b1=float(o.b1), b2=float(o.b2),
                      eps=float(o.eps),
                      clip_norm=float(o.clip_norm) if o.get('clip_norm') else None,
                      lr_multipliers=tuple((p, float(m)) for p, m in _rules(o.lr_multipliers)),
                      per_task_state=o.get('per_task_state') or None,
                      per_task_grad_norm=o.get('per_task_grad_norm') or None),
      trainable=tuple((p, bool(t)) for p, t in _rules(config.trainable)),
      mesh=MeshSpec(shape=tuple(int(s) for s in config.mesh.shape),
                    axes=tuple(config.mesh.axes),
                    logical_axis_rules=tuple((str(n), tuple(a) if isinstance(a, list) else a)
                                             for n, a in config.logical_axis_rules)),
      checkpoint=CheckpointSpec(every_steps=int(c.every_steps), keep=int(c.keep),
                                async_save=bool(c.async_save), best_metric=c.best_metric),
      total_steps=int(config.total_steps), log_every_steps=int(config.log_every_steps),
      eval_every_steps=int(config.eval_every_steps), init_from=config.init_from or None,
      new_languages=tuple(config.new_languages), new_language_init=config.new_language_init,
      diagnostics=bool(config.get('diagnostics', False)))
