"""What a config means on this machine: the checks that read the disk, need a device or a
checkpoint, and the model's configuration built from the checkpoint's sizes and this device.

    spec = environment.parse(config, jax.device_count())  # every problem at once, or ConfigError
    model = environment.model_config(spec)                 # -> models.model.ModelConfig

`parse` runs the pure checks of `spec.py` and then these, so one ConfigError lists every bad
field before anything is built: local files that do not exist, a source config its format
cannot read, `data.max_length` beyond a local checkpoint's positions, a fused attention
kernel this device cannot run, a mesh the devices cannot form or a batch it cannot split,
language codes that URIEL does not know (typology vectors).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from hyperx_jax import typology
from hyperx_jax.assets.cache_paths import cache_paths
from hyperx_jax.config.sections import StreamSpec
from hyperx_jax.config.spec import RunSpec, decode, raise_if
from hyperx_jax.config.vocabulary import (
    ATTENTION_CHOICES,
    AUTO_ATTENTION,
    TYPOLOGY_SOURCES,
    XLA_ATTENTION,
)
from hyperx_jax.data import sources
from hyperx_jax.models import attention
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.model import ModelConfig
from hyperx_jax.models.weights import encoder_config_from_checkpoint
from hyperx_jax.models.xlmr import EncoderConfig


def is_local_path(p: str) -> bool:
  """Hub ids look like 'org/name'; local paths are absolute, relative with '.', or '~'."""
  return p.startswith(("/", ".", "~"))


def parse(config: Any, device_count: int) -> RunSpec:
  """The RunSpec of `config`, checked: a ConfigError lists every bad field (pure checks and
  those of this machine), before anything is built."""
  errors: list[str] = []
  spec = decode(config, errors)
  spec.check(errors)
  check(spec, device_count, errors)
  raise_if(errors)
  return spec


def check(spec: RunSpec, device_count: int, errors: list[str]) -> None:
  """Appends the problems that need the disk, this machine's devices or a checkpoint."""
  for where, value in (
      ("config.model.checkpoint", spec.model.checkpoint),
      ("config.tokenizer", spec.tokenizer),
  ):
    if isinstance(value, str) and is_local_path(value):
      _check_exists(where, "local path", value, errors)
  _check_max_length(spec, errors)
  _check_attention(spec, errors)
  if spec.hyperx.language_source in TYPOLOGY_SOURCES and spec.method == "hyperx":
    _check_uriel_codes(spec, errors)
  for key in ("train_streams", "eval_streams"):
    for i, stream in enumerate(getattr(spec, key)):
      _check_stream(stream, f"config.{key}[{i}]", errors)
  _check_mesh(spec, device_count, errors)
  if (
      spec.init_from is not None
      and "://" not in spec.init_from
      and not os.path.isdir(os.path.expanduser(spec.init_from))
  ):
    errors.append(
        f"config.init_from: {spec.init_from!r} is not a directory (a trained run's workdir)"
    )


def known_encoder(spec: RunSpec) -> Optional[tuple[EncoderConfig, str]]:
  """The encoder's sizes when they are known before any download: a local checkpoint's
  config.json, or the preset without a checkpoint; None for a hub id or an unreadable file."""
  m = spec.model
  try:
    if m.checkpoint is None:
      return EncoderConfig.preset(m.preset), f"preset {m.preset!r}"
    path = os.path.expanduser(m.checkpoint)
    if is_local_path(m.checkpoint) and os.path.isfile(os.path.join(path, "config.json")):
      return EncoderConfig.from_hf(path), os.path.join(m.checkpoint, "config.json")
  except (ValueError, OSError):
    return None  # reported where the model is built
  return None


def _check_max_length(spec: RunSpec, errors: list[str]) -> None:
  known = known_encoder(spec)
  n = spec.data.max_length
  if known is not None and isinstance(n, int) and n > known[0].longest_sequence:
    c, where = known
    errors.append(
        f"config.data.max_length: {n} exceeds the {c.longest_sequence} positions of "
        f"the encoder ({where}: max_position_embeddings={c.max_positions} - "
        f"{c.pad_token_id + 1}, as RoBERTa position ids start at pad_token_id + 1)"
    )


def _check_attention(spec: RunSpec, errors: list[str]) -> None:
  """An explicit fused kernel ('cudnn', 'splash') must be able to run on this process's device
  (the head dim when the encoder is known already)."""
  choice = spec.model.attention
  if choice in (AUTO_ATTENTION, XLA_ATTENTION) or choice not in ATTENTION_CHOICES:
    return
  known = known_encoder(spec)
  blockers = attention.blockers(
      choice,
      attention.local_device(),
      dtype=spec.model.dtype,
      head_dim=known[0].head_dim if known else None,
      max_length=spec.data.max_length,
      packed=spec.data.packed,
  )
  errors.extend(f"config.model.attention: {choice!r} cannot run here: {b}" for b in blockers)


def _check_uriel_codes(spec: RunSpec, errors: list[str]) -> None:
  """Every language a code URIEL knows; an unknown one is named with its close matches."""
  for i, lang in enumerate(spec.languages):
    try:
      typology.resolve(lang)
    except typology.UnknownLanguageError as e:
      errors.append(
          f"config.languages[{i}]: {e} (hyperx.language_source "
          f"{spec.hyperx.language_source!r} reads its URIEL features)"
      )


def _check_stream(stream: StreamSpec, where: str, errors: list[str]) -> None:
  """The source config against its format (keys, options, the task kinds it feeds) and the
  local files it names."""
  problems = sources.check_source(stream.source, f"{where}.source")
  errors.extend(problems)
  if problems:
    return
  source_format = sources.FORMATS[stream.source["type"]]
  if stream.kind and stream.kind not in source_format.kinds:
    errors.append(
        f"{where}.source.type: a {source_format.name!r} source feeds "
        f"{list(source_format.kinds)} tasks; task {stream.task!r} is {stream.kind}"
    )
  for key, path in source_format.local_paths(stream.source):
    _check_exists(f"{where}.source.{key}", "", path, errors)


def _check_exists(where: str, what: str, path: str, errors: list[str]) -> None:
  """A missing path is an error; one inside the asset cache also says how to fill it (once)."""
  path = os.path.expanduser(path)
  if os.path.exists(path):
    return
  errors.append(f"{where}: {what + ' ' if what else ''}{path!r} does not exist")
  cache = cache_paths().cache
  hint = (
      f"(paths under {cache} are the offline assets: prepare them with `hyperx assets prepare`, "
      "adding --settings=ner_pos for that setting's data, or point HYPERX_CACHE at a prepared "
      "cache)"
  )
  if os.path.abspath(path).startswith(cache + os.sep) and hint not in errors:
    errors.append(hint)


def _check_mesh(spec: RunSpec, device_count: int, errors: list[str]) -> None:
  """The mesh on this machine's devices; every batch splits over its data axes."""
  mesh = spec.mesh
  if len(mesh.shape) != len(mesh.axes):
    return  # a pure check reports it
  resolved = mesh.resolve(device_count)
  if resolved is None:
    errors.append(
        f"config.mesh.shape: {tuple(mesh.shape)} cannot be laid out on {device_count} "
        "devices (at most one -1; the product must equal the device count)"
    )
    return
  dp = mesh.data_parallel(device_count)
  d = spec.data
  names = ["batch_size", "eval_batch_size"]
  if d.packed and d.packed_rows_valid:
    names.append("packed_rows")  # a packed batch's rows are what the mesh splits
  for name in names:
    value = getattr(d, name)
    if isinstance(value, int) and value > 0 and value % dp:
      hint = (
          "; set it to a multiple of that, or unpack: --config.data.packing=0 "
          "--config.data.packed_rows=0"
          if name == "packed_rows"
          else ""
      )
      errors.append(
          f"config.data.{name}: {value} is not divisible by the data-parallel mesh "
          f"size {dp} (mesh {dict(zip(mesh.axes, resolved))}){hint}"
      )


# ------------------------------------------------------------------- the model on this machine


def encoder_config(spec: RunSpec, *, strict_attention: bool = True) -> EncoderConfig:
  """config.model (+ adapter.placement) -> EncoderConfig: sizes from the checkpoint's
  config.json (or the XLM-R preset without a checkpoint), options from the config, and
  model.attention resolved for this process's device (`attention.resolve`; with
  `strict_attention=False` an explicit kernel that cannot run here falls back to xla)."""
  m = spec.model
  options = dict(
      dtype=m.dtype,
      param_dtype=m.param_dtype,
      scan_layers=m.scan_layers,
      remat=m.remat,
      hidden_dropout=m.hidden_dropout,
      attention_dropout=m.attention_dropout,
      adapter_placement=spec.adapter.placement,
  )
  if m.checkpoint:
    encoder = encoder_config_from_checkpoint(m.checkpoint, **options)
  else:
    encoder = EncoderConfig.preset(m.preset, **options)
  kernel = attention.resolve(
      m.attention,
      attention.local_device(),
      dtype=encoder.dtype,
      head_dim=encoder.head_dim,
      max_length=spec.data.max_length,
      packed=spec.data.packed,
      attention_dropout=encoder.attention_dropout,
      strict=strict_attention,
  )
  return dataclasses.replace(encoder, attention=kernel)


def hypernet_config(spec: RunSpec) -> HyperNetConfig:
  """config.hyperx + config.adapter -> HyperNetConfig (untrained languages resolved to ids)."""
  h = spec.hyperx
  mean_languages = ()
  if h.untrained_language == "mean":
    mean_languages = tuple(spec.languages.index(lang) for lang in spec.untrained_languages())
  return HyperNetConfig(
      task_dim=h.task_dim,
      lang_dim=h.lang_dim,
      layer_dim=h.layer_dim,
      projected_dim=h.projected_dim,
      use_projector=h.use_projector,
      condition_on_layer=h.condition_on_layer,
      init_std=h.init_std,
      unit_projection=h.unit_projection,
      language_source=h.language_source,
      typology_features=tuple(h.typology_features),
      mean_languages=mean_languages,
      bottleneck=spec.adapter.bottleneck,
      conditional_layer_norm=spec.adapter.layer_norm,
  )


def model_config(spec: RunSpec, *, strict_attention: bool = True) -> ModelConfig:
  """Everything that decides the model's parameters and forward pass, on this machine."""
  return ModelConfig(
      method=spec.method,
      encoder=encoder_config(spec, strict_attention=strict_attention),
      hypernet=hypernet_config(spec),
      tasks=tuple(spec.tasks.values()),
      languages=tuple(spec.languages),
      classifier_dropout=float(spec.model.classifier_dropout),
  )
