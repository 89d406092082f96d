"""Config checks: every mistake a config can hold is reported before anything compiles.

`check_config(config, device_count)` collects all problems and raises one `ConfigError` whose
lines each name the offending field (`config.train_streams[2].lang: 'xx' is not in
config.languages [...]`). It is the only reader of a raw `ConfigDict` besides `specs.parse`,
which calls it first. Coverage of `config.trainable` needs the parameter paths: the run checks
it on the abstract model (`optim.trainable_filter`), still before compilation, and raises
ConfigError too.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Iterable

from hyperx_jax import typology
from hyperx_jax.data.sources import SOURCE_TYPES
from hyperx_jax.metrics import metric_names
from hyperx_jax.models import attention
from hyperx_jax.models.layers import is_dropout_rate
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.schema import (ATTENTION_CHOICES, AUTO_ATTENTION, DATA_AXES, DEV,
                               DTYPES, EVAL_ROLES, IOB2_MODES, LANGUAGE_SOURCES, LEARNED_SOURCE,
                               METHODS, METRICS,
                               NEW_LANGUAGE_INITS, PACKING_OFF, PAIR, PLACEMENTS, POOLINGS,
                               REMAT_POLICIES, TASK_KINDS, TEST, TOKEN, TYPOLOGY_FEATURE_SETS,
                               TYPOLOGY_SOURCES, UNTRAINED_LANGUAGE_VECTORS, XLA_ATTENTION)
from hyperx_jax.sharding import resolve_mesh_shape

# Source keys that name local files or directories (checked for existence).
PATH_KEYS = ('path', 'paths', 'file', 'files', 'manual_dir', 'data_dir', 'dir', 'glob')


class ConfigError(ValueError):
  """A config problem found before compilation; the message names each bad field."""


def task_names(config: Any) -> list[str]:
  """Task names in id order (their order in `config.tasks`)."""
  return list(config.tasks.keys())


def _field(obj: Any, key: str, default: Any = None) -> Any:
  """obj[key], or `default` when obj has no such key (or is not a mapping)."""
  try:
    return obj[key]
  except (KeyError, AttributeError, TypeError):
    return default


def _is_local_path(p: str) -> bool:
  """Hub ids look like 'org/name'; local paths are absolute, relative with '.', or '~'."""
  return p.startswith(('/', '.', '~'))


def _check_model(config: Any, errors: list[str]) -> None:
  m = config.model
  for field in ('dtype', 'param_dtype'):
    if m[field] not in DTYPES:
      errors.append(f'config.model.{field}: {m[field]!r} is not one of {list(DTYPES)}')
  if m.checkpoint is None and config.tokenizer is None:
    errors.append('config.tokenizer: must be set when config.model.checkpoint is None '
                  '(random init has no tokenizer files)')
  for field, value in (('config.model.checkpoint', m.checkpoint),
                       ('config.tokenizer', config.tokenizer)):
    if isinstance(value, str) and _is_local_path(value) and not os.path.exists(
        os.path.expanduser(value)):
      errors.append(f'{field}: local path {value!r} does not exist')
  if config.adapter.placement not in PLACEMENTS:
    errors.append(f'config.adapter.placement: {config.adapter.placement!r} is not one of '
                  f'{list(PLACEMENTS)}')
  if m.get('remat', 'none') not in REMAT_POLICIES:
    errors.append(f'config.model.remat: {m.remat!r} is not one of {list(REMAT_POLICIES)}')
  if config.adapter.bottleneck <= 0:
    errors.append(f'config.adapter.bottleneck: must be positive, got {config.adapter.bottleneck}')
  for field in ('hidden_dropout', 'attention_dropout', 'classifier_dropout'):
    if field in m and not is_dropout_rate(m[field]):
      errors.append(f'config.model.{field}: {m[field]!r} is not a dropout rate in [0, 1)')


def _known_encoder(config: Any) -> tuple[EncoderConfig, str] | None:
  """The encoder's config when it is known before any download: a local checkpoint's
  config.json, or the preset without a checkpoint; None for a hub id or an unreadable file."""
  m = config.model
  try:
    if m.checkpoint is None:
      return EncoderConfig.preset(m.get('preset', 'base')), f"preset {m.get('preset', 'base')!r}"
    path = os.path.expanduser(m.checkpoint)
    if _is_local_path(m.checkpoint) and os.path.isfile(os.path.join(path, 'config.json')):
      return EncoderConfig.from_hf(path), os.path.join(m.checkpoint, 'config.json')
  except (ValueError, OSError):
    return None  # reported where the model is built
  return None


def _check_packing(config: Any, errors: list[str]) -> None:
  """data.packing is off or k >= 2; packed, data.packed_rows is in [1, batch_size] (the mesh
  check divides it); unpacked, it stays 0."""
  d = config.data
  k, rows = d.get('packing', PACKING_OFF), d.get('packed_rows', 0)
  if isinstance(k, bool) or not isinstance(k, int) or (k != PACKING_OFF and k < 2):
    errors.append(f'config.data.packing: {k!r} is not {PACKING_OFF} (off: one example per row) '
                  'or an int >= 2 (the most sentences a training row holds)')
  elif k == PACKING_OFF and rows != 0:
    errors.append(f'config.data.packed_rows: {rows!r} is set but config.data.packing is off '
                  f'({PACKING_OFF}); set both or neither')
  elif k != PACKING_OFF and not _packed_rows_valid(d):
    errors.append(f'config.data.packed_rows: {rows!r} is not an int in [1, batch_size = '
                  f'{d.batch_size}] (the rows that hold a packed batch of up to batch_size '
                  'sentences; python -m hyperx_jax.benchmarks.packing_bench shows how many a '
                  'dataset needs)')
  elif k != PACKING_OFF and rows * k < d.batch_size:
    errors.append(f'config.data.packed_rows: {rows} rows of at most {k} sentences '
                  f'(data.packing) never hold a batch of batch_size = {d.batch_size}')


def _packed_rows_valid(data: Any) -> bool:
  rows = data.get('packed_rows', 0)
  return not isinstance(rows, bool) and isinstance(rows, int) and 1 <= rows <= data.batch_size


def _check_attention(config: Any, errors: list[str]) -> None:
  """model.attention is known; an explicit fused kernel ('cudnn', 'splash') must be able to run
  on this process's device (`attention.blockers`; the head dim when the encoder is known
  already) and must serve every call, so attention-probability dropout (which neither fused
  kernel has) must be off."""
  m = config.model
  choice = m.get('attention', AUTO_ATTENTION)
  if choice not in ATTENTION_CHOICES:
    errors.append(f'config.model.attention: {choice!r} is not one of {list(ATTENTION_CHOICES)}')
    return
  if choice in (AUTO_ATTENTION, XLA_ATTENTION):
    return
  known = _known_encoder(config)
  blockers = attention.blockers(
      choice, attention.local_device(), dtype=m.dtype,
      head_dim=known[0].head_dim if known else None, max_length=config.data.max_length,
      packed=config.data.get('packing', PACKING_OFF) != PACKING_OFF)
  if m.get('attention_dropout', 0.0):
    blockers.append(f'{choice!r} attention has no attention-probability dropout; '
                    f'config.model.attention_dropout is {m.attention_dropout} (set it to 0, or '
                    f"use {AUTO_ATTENTION!r}: the fused kernel wherever no dropout applies)")
  errors.extend(f"config.model.attention: {choice!r} cannot run here: {b}" for b in blockers)


def _check_max_length(config: Any, errors: list[str]) -> None:
  known = _known_encoder(config)
  n = config.data.max_length
  if known is not None and n > known[0].longest_sequence:
    c, where = known
    errors.append(f'config.data.max_length: {n} exceeds the {c.longest_sequence} positions of '
                  f'the encoder ({where}: max_position_embeddings={c.max_positions} - '
                  f'{c.pad_token_id + 1}, as RoBERTa position ids start at pad_token_id + 1)')


def _check_tasks(config: Any, errors: list[str]) -> None:
  if not task_names(config):
    errors.append('config.tasks: no tasks defined')
  for name in task_names(config):
    task = config.tasks[name]
    kind, metric = _field(task, 'kind'), _field(task, 'metric')
    if kind not in TASK_KINDS:
      errors.append(f'config.tasks.{name}.kind: {kind!r} is not one of {list(TASK_KINDS)}')
    if metric not in METRICS:
      errors.append(f'config.tasks.{name}.metric: {metric!r} is not one of {list(METRICS)}')
    pooling = _field(task, 'pooling') or 'cls'
    if pooling not in POOLINGS:
      errors.append(f'config.tasks.{name}.pooling: {pooling!r} is not one of {list(POOLINGS)}')
    if kind in (PAIR, TOKEN) and not _field(task, 'labels'):
      errors.append(f'config.tasks.{name}.labels: a {kind} task needs its label list')
  langs = list(config.languages)
  if len(set(langs)) != len(langs):
    errors.append(f'config.languages: duplicates in {langs}')
  for lang in config.new_languages:
    if lang not in langs:
      errors.append(f'config.new_languages: {lang!r} is not in config.languages {langs}')
  if config.new_language_init not in NEW_LANGUAGE_INITS:
    errors.append(f'config.new_language_init: {config.new_language_init!r} is not one of '
                  f'{list(NEW_LANGUAGE_INITS)}')


def _check_language_source(config: Any, errors: list[str]) -> None:
  """hyperx.language_source, its feature sets, and the few-shot and untrained-language options
  that go with it; with a typology source, every language's code (`_check_uriel_codes`)."""
  h = config.get('hyperx') or {}
  source = h.get('language_source', LEARNED_SOURCE)
  if source not in LANGUAGE_SOURCES:
    errors.append(f'config.hyperx.language_source: {source!r} is not one of '
                  f'{list(LANGUAGE_SOURCES)}')
    return
  sets = list(h.get('typology_features', TYPOLOGY_FEATURE_SETS))
  unknown = [s for s in sets if s not in TYPOLOGY_FEATURE_SETS]
  if unknown or not sets:
    errors.append(f'config.hyperx.typology_features: {sets!r}; expected a non-empty list of '
                  f'{list(TYPOLOGY_FEATURE_SETS)}')
  unit = h.get('unit_projection', False)
  if not isinstance(unit, bool):
    errors.append(f'config.hyperx.unit_projection: {unit!r}; expected True or False')
  untrained = h.get('untrained_language', 'row')
  if untrained not in UNTRAINED_LANGUAGE_VECTORS:
    errors.append(f'config.hyperx.untrained_language: {untrained!r} is not one of '
                  f'{list(UNTRAINED_LANGUAGE_VECTORS)}')
  elif untrained == 'mean' and source != LEARNED_SOURCE:
    errors.append(f"config.hyperx.untrained_language: 'mean' reads learned rows; with "
                  f'language_source {source!r} an untrained language reads its typology vector '
                  "(set 'row')")
  if config.new_language_init == 'typology' and source not in TYPOLOGY_SOURCES:
    errors.append("config.new_language_init: 'typology' needs config.hyperx.language_source "
                  f"'typology' or 'both', not {source!r}")
  if source == 'typology' and config.new_languages and config.new_language_init != 'typology':
    errors.append(f'config.new_language_init: {config.new_language_init!r} sets learned rows; '
                  "with language_source 'typology' there are none (a new language's vector is "
                  "its typology vector): set 'typology'")
  if source in TYPOLOGY_SOURCES and config.method == 'hyperx':
    _check_uriel_codes(config.languages, source, errors)


def _check_uriel_codes(languages: Any, source: str, errors: list[str]) -> None:
  """Every language a code URIEL knows; an unknown one is named with its close matches."""
  for i, lang in enumerate(languages):
    try:
      typology.resolve(lang)
    except typology.UnknownLanguageError as e:
      errors.append(f'config.languages[{i}]: {e} (hyperx.language_source {source!r} reads its '
                    'URIEL features)')


def _source_paths(source: Any) -> Iterable[tuple[str, str]]:
  for key in PATH_KEYS:
    value = _field(source, key)
    if isinstance(value, str):
      yield key, value
    elif isinstance(value, (list, tuple)):
      for i, v in enumerate(value):
        yield f'{key}[{i}]', v


def _check_streams(config: Any, field: str, errors: list[str]) -> None:
  tasks, langs = task_names(config), list(config.languages)
  streams = list(config[field])
  if field == 'train_streams' and not streams:
    errors.append('config.train_streams: no training streams')
  for i, s in enumerate(streams):
    where = f'config.{field}[{i}]'
    task, lang, source = _field(s, 'task'), _field(s, 'lang'), _field(s, 'source')
    if task not in tasks:
      errors.append(f'{where}.task: unknown task {task!r}; known tasks: {tasks}')
    if lang not in langs:
      errors.append(f'{where}.lang: {lang!r} is not in config.languages {langs}')
    stype = _field(source, 'type')
    if stype not in SOURCE_TYPES:
      errors.append(f'{where}.source.type: {stype!r} is not one of {list(SOURCE_TYPES)}')
      continue
    if stype == 'tfds' and not _field(source, 'name'):
      errors.append(f'{where}.source.name: a tfds source needs a builder name')
    if stype == 'mo' and not _field(source, 'lang'):
      errors.append(f'{where}.source.lang: a mo source needs the gettext locale name')
    has_path = any(True for _ in _source_paths(source))
    if stype == 'hf_parquet' and not has_path:
      needs = {'repo': "the hub dataset id (e.g. 'google/xtreme')",
               'revision': 'a pinned revision (a commit sha or a tag)'}
      for key, what in needs.items():
        if not _field(source, key):
          errors.append(f'{where}.source.{key}: an hf_parquet source without a local path '
                        f'needs {what}')
    elif stype not in ('tfds', 'mo') and not has_path:
      errors.append(f'{where}.source: a {stype} source needs a path (one of {list(PATH_KEYS)})')
    iob2 = _field(source, 'iob2')
    if iob2 is not None and iob2 not in IOB2_MODES:
      errors.append(f'{where}.source.iob2: {iob2!r} is not one of {list(IOB2_MODES)}')
    for key, path in _source_paths(source):
      if key == 'glob' or any(ch in path for ch in '*?['):
        continue
      if not os.path.exists(os.path.expanduser(path)):
        errors.append(f'{where}.source.{key}: {path!r} does not exist')
    max_examples = _field(s, 'max_examples')
    if max_examples is not None and max_examples <= 0:
      errors.append(f'{where}.max_examples: must be positive or None, got {max_examples}')
    _check_role(where, field, _field(s, 'role'), errors)
  # One stream per (task, language); an evaluation pair may have a dev and a test stream.
  pairs = [(_field(s, 'task'), _field(s, 'lang'))
           + ((_role(s),) if field == 'eval_streams' else ()) for s in streams]
  twice = sorted({p for p in pairs if pairs.count(p) > 1})
  if twice:
    errors.append(f'config.{field}: these (task, language{", role" * (field == "eval_streams")})'
                  f' appear more than once: {twice}')


def _role(stream: Any) -> str:
  return _field(stream, 'role') or DEV


def _check_role(where: str, field: str, role: Any, errors: list[str]) -> None:
  if field == 'train_streams' and role is not None:
    errors.append(f'{where}.role: only evaluation streams have a role ({list(EVAL_ROLES)})')
  elif role is not None and role not in EVAL_ROLES:
    errors.append(f'{where}.role: {role!r} is not one of {list(EVAL_ROLES)}')


def _check_mesh_and_batch(config: Any, device_count: int, errors: list[str]) -> None:
  shape, axes = tuple(config.mesh.shape), tuple(config.mesh.axes)
  if len(shape) != len(axes):
    errors.append(f'config.mesh.shape {shape} and config.mesh.axes {axes} differ in length')
    return
  resolved = resolve_mesh_shape(shape, device_count)
  if resolved is None:
    errors.append(f'config.mesh.shape: {shape} cannot be laid out on {device_count} devices '
                  '(at most one -1; the product must equal the device count)')
    return
  dp = math.prod(n for n, a in zip(resolved, axes) if a in DATA_AXES)
  fields = ['batch_size', 'eval_batch_size']
  if config.data.get('packing', PACKING_OFF) != PACKING_OFF and _packed_rows_valid(config.data):
    fields.append('packed_rows')  # a packed batch's rows are what the mesh splits
  for field in fields:
    value = config.data[field]
    if value <= 0 or value % dp:
      hint = ('; set it to a multiple of that, or unpack: --config.data.packing=0 '
              '--config.data.packed_rows=0' if field == 'packed_rows' else '')
      errors.append(f'config.data.{field}: {value} is not divisible by the data-parallel '
                    f'mesh size {dp} (mesh {dict(zip(axes, resolved))}){hint}')
  mesh_axes = set(axes)
  for i, (name, target) in enumerate(config.logical_axis_rules):
    targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    unknown = [t for t in targets if t not in mesh_axes]
    if unknown:
      errors.append(f'config.logical_axis_rules[{i}] ({name!r}): mesh axes {unknown} are not '
                    f'in config.mesh.axes {list(axes)}')


def _check_regexes(rules: Any, field: str, errors: list[str]) -> None:
  for i, rule in enumerate(rules):
    try:
      pattern, value = rule
      re.compile(pattern)
    except (TypeError, ValueError) as e:
      errors.append(f'{field}[{i}]: expected (regex, value), got {rule!r} ({e})')
      continue
    if field.endswith('lr_multipliers') and not float(value) > 0:
      errors.append(f'{field}[{i}]: multiplier must be positive, got {value!r}')


def _check_optim(config: Any, errors: list[str]) -> None:
  o = config.optim
  if config.total_steps <= 0:
    errors.append(f'config.total_steps: must be positive, got {config.total_steps}')
  if not 0 <= o.warmup_steps < config.total_steps:
    errors.append(f'config.optim.warmup_steps: {o.warmup_steps} must be in [0, '
                  f'config.total_steps={config.total_steps})')
  if o.lr <= 0:
    errors.append(f'config.optim.lr: must be positive, got {o.lr}')
  _check_regexes(o.lr_multipliers, 'config.optim.lr_multipliers', errors)
  for field in ('per_task_state', 'per_task_grad_norm'):
    pattern = o.get(field)
    if pattern:
      try:
        re.compile(pattern)
      except re.error as e:
        errors.append(f'config.optim.{field}: {pattern!r} is not a regex ({e})')
  _check_regexes(config.trainable, 'config.trainable', errors)
  for field in ('every_steps', 'keep'):
    if config.checkpoint[field] <= 0:
      errors.append(f'config.checkpoint.{field}: must be positive')
  for field in ('eval_every_steps', 'log_every_steps'):
    if config[field] <= 0:
      errors.append(f'config.{field}: must be positive, got {config[field]}')


def _check_best_metric(config: Any, errors: list[str]) -> None:
  """`checkpoint.best_metric` must be one of the 'task:lang/metric' names the dev pairs report
  (metrics.metric_names): test pairs never select, and any other name would leave the 'best'
  checkpoint arbitrary."""
  best = config.checkpoint.best_metric
  if best is None:
    return
  known = {DEV: [], TEST: []}
  for s in config.eval_streams:
    task = _field(config.tasks, s['task'], {})
    kind, metric = _field(task, 'kind'), _field(task, 'metric')
    known[_role(s) if _role(s) in known else DEV] += [
        f"{s['task']}:{s['lang']}/{name}" for name in metric_names(kind, metric)]
  if best in known[DEV]:
    return
  if best in known[TEST]:
    errors.append(f'config.checkpoint.best_metric: {best!r} is a test pair\'s metric; the '
                  f"checkpoint is selected on dev pairs (eval streams with role 'dev'): "
                  f'{sorted(set(known[DEV]))}')
  else:
    errors.append(f'config.checkpoint.best_metric: {best!r} is not a metric the dev pairs '
                  f'report; valid names: {sorted(set(known[DEV]))}')


def check_config(config: Any, device_count: int) -> None:
  """Raises ConfigError listing every problem in `config` (one line per field)."""
  errors: list[str] = []
  if config.method not in METHODS:
    errors.append(f'config.method: unknown method {config.method!r}; known: {list(METHODS)}')
  _check_model(config, errors)
  _check_max_length(config, errors)
  _check_packing(config, errors)
  _check_attention(config, errors)
  _check_tasks(config, errors)
  _check_language_source(config, errors)
  _check_streams(config, 'train_streams', errors)
  _check_streams(config, 'eval_streams', errors)
  _check_mesh_and_batch(config, device_count, errors)
  _check_optim(config, errors)
  _check_best_metric(config, errors)
  if (config.init_from is not None and '://' not in config.init_from
      and not os.path.isdir(os.path.expanduser(config.init_from))):
    errors.append(f'config.init_from: {config.init_from!r} is not a directory (a trained '
                  "run's workdir)")
  if errors:
    raise ConfigError('invalid config:\n  ' + '\n  '.join(errors))
