"""Hugging Face XLM-R checkpoint (safetensors / .bin, local dir or hub id) -> encoder params.

The name map is explicit: every encoder parameter path (see models/xlmr.py) names the PyTorch
tensor it comes from and how that tensor is laid out:

    copy        same layout                       (embeddings, LayerNorms, dense biases)
    linear      [out, in] -> [in, out]            (FFN kernels)
    heads_out   [N*D, H] -> [H, N, D]             (query/key/value kernels)
    heads_bias  [N*D] -> [N, D]                   (query/key/value biases)
    heads_in    [H, N*D] -> [N, D, H]             (attention output kernel)

Per-layer tensors (`encoder.layer.{i}.…`) are stacked on the leading `layers` axis. A reader can
produce any rectangular slice of our layout from the matching slice of the PyTorch tensor, so
with `shardings` each device reads only its own shard (`jax.make_array_from_callback` +
safetensors `get_slice`) and no host holds an unsharded copy of a large model. (PyTorch `.bin`
files cannot be read by slice: they are loaded whole on the host, so prefer safetensors for
large models.) Pre-LayerNorm XLM-R XL/XXL checkpoints (`model_type: xlm-roberta-xl`) use
`PRE_LN_PARAM_MAP`.

The same map runs backwards: `to_hf_tensors` names any of our encoder parameters as in
`XLMRobertaModel.state_dict()` (PyTorch layout, one tensor per layer), `from_hf_tensors` reads
such tensors back into our layout, and `apply_hf_tensors` puts them (e.g. an export's trained
LayerNorms) back into an encoder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyperx_jax.models.xlmr import EncoderConfig, XLMREncoder

PathLike = Union[str, pathlib.Path]

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)
_HUB_PATTERNS = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
]

# Checkpoint tensors that are not part of the encoder and are skipped without complaint.
_IGNORED = re.compile(r"(^|\.)(pooler|lm_head)\.|(^|\.)(position_ids|token_type_ids)$")
_PREFIXES = ("roberta.", "xlm_roberta.", "")

# our path -> (PyTorch name without prefix, layout)
_LAYER_MAP = {
    "layers/attention/query/kernel": ("encoder.layer.{i}.attention.self.query.weight", "heads_out"),
    "layers/attention/query/bias": ("encoder.layer.{i}.attention.self.query.bias", "heads_bias"),
    "layers/attention/key/kernel": ("encoder.layer.{i}.attention.self.key.weight", "heads_out"),
    "layers/attention/key/bias": ("encoder.layer.{i}.attention.self.key.bias", "heads_bias"),
    "layers/attention/value/kernel": ("encoder.layer.{i}.attention.self.value.weight", "heads_out"),
    "layers/attention/value/bias": ("encoder.layer.{i}.attention.self.value.bias", "heads_bias"),
    "layers/attention/out/kernel": ("encoder.layer.{i}.attention.output.dense.weight", "heads_in"),
    "layers/attention/out/bias": ("encoder.layer.{i}.attention.output.dense.bias", "copy"),
    "layers/attention_ln/scale": ("encoder.layer.{i}.attention.output.LayerNorm.weight", "copy"),
    "layers/attention_ln/bias": ("encoder.layer.{i}.attention.output.LayerNorm.bias", "copy"),
    "layers/ffn_in/kernel": ("encoder.layer.{i}.intermediate.dense.weight", "linear"),
    "layers/ffn_in/bias": ("encoder.layer.{i}.intermediate.dense.bias", "copy"),
    "layers/ffn_out/kernel": ("encoder.layer.{i}.output.dense.weight", "linear"),
    "layers/ffn_out/bias": ("encoder.layer.{i}.output.dense.bias", "copy"),
    "layers/output_ln/scale": ("encoder.layer.{i}.output.LayerNorm.weight", "copy"),
    "layers/output_ln/bias": ("encoder.layer.{i}.output.LayerNorm.bias", "copy"),
}
_EMBEDDING_MAP = {
    "embeddings/word": ("embeddings.word_embeddings.weight", "copy"),
    "embeddings/position": ("embeddings.position_embeddings.weight", "copy"),
    "embeddings/token_type": ("embeddings.token_type_embeddings.weight", "copy"),
    "embeddings/ln/scale": ("embeddings.LayerNorm.weight", "copy"),
    "embeddings/ln/bias": ("embeddings.LayerNorm.bias", "copy"),
}
PARAM_MAP = {**_EMBEDDING_MAP, **_LAYER_MAP}  # post-LN XLM-R (base, large)
# Pre-LN XLM-R XL/XXL: no embedding LayerNorm, per-sublayer input LayerNorms, a final one.
PRE_LN_PARAM_MAP = {
    **{k: v for k, v in PARAM_MAP.items() if not re.search(r"(^|/)[a-z_]*ln/", k)},
    "layers/attention_ln/scale": (
        "encoder.layer.{i}.attention.self_attn_layer_norm.weight",
        "copy",
    ),
    "layers/attention_ln/bias": ("encoder.layer.{i}.attention.self_attn_layer_norm.bias", "copy"),
    "layers/output_ln/scale": ("encoder.layer.{i}.LayerNorm.weight", "copy"),
    "layers/output_ln/bias": ("encoder.layer.{i}.LayerNorm.bias", "copy"),
    "final_ln/scale": ("encoder.LayerNorm.weight", "copy"),
    "final_ln/bias": ("encoder.LayerNorm.bias", "copy"),
}
_MLM_HEAD = ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias")


@dataclasses.dataclass
class LoadReport:
  """What `load_encoder_weights` did (names are our parameter paths / checkpoint names)."""

  source: pathlib.Path
  loaded: list[str]  # our parameter paths filled from the checkpoint
  ignored: list[str]  # checkpoint tensors not used by the encoder (pooler, lm_head, ...)
  initialised: list[str]  # our parameters left at their initial values (allow_missing)

  def __str__(self) -> str:
    return (
        f"{self.source}: loaded {len(self.loaded)} parameters, ignored "
        f"{len(self.ignored)} tensors {self.ignored}, kept initial values for "
        f"{self.initialised}"
    )


# ----------------------------------------------------------------------------- locating files


def resolve_checkpoint(name_or_dir: PathLike) -> pathlib.Path:
  """A local directory as is; a hub id is downloaded (weights in one format, config, tokenizer)."""
  path = pathlib.Path(name_or_dir).expanduser()
  if path.is_dir():
    return path
  name = str(name_or_dir)
  if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
    raise FileNotFoundError(f"checkpoint {name!r} is neither a directory nor a hub id")
  import huggingface_hub  # pylint: disable=g-import-not-at-top

  try:
    local = huggingface_hub.snapshot_download(
        name, allow_patterns=_HUB_PATTERNS + [SAFETENSORS, SAFETENSORS_INDEX, "*.safetensors"]
    )
    if not any(pathlib.Path(local).glob("*.safetensors")):
      local = huggingface_hub.snapshot_download(
          name, allow_patterns=_HUB_PATTERNS + [TORCH_BIN, TORCH_BIN_INDEX, "pytorch_model*.bin"]
      )
  except Exception as e:  # network, unknown repo, auth: say which checkpoint failed
    raise OSError(f"could not download Hugging Face checkpoint {name!r}: {e}") from e
  return pathlib.Path(local)


def encoder_config_from_checkpoint(name_or_dir: PathLike, **overrides) -> EncoderConfig:
  """The encoder config of a local checkpoint directory, or of a hub id (its config.json only:
  no weights are downloaded)."""
  path = pathlib.Path(name_or_dir).expanduser()
  if path.exists():
    return EncoderConfig.from_hf(path, **overrides)
  import transformers  # pylint: disable=g-import-not-at-top

  hf_config = transformers.AutoConfig.from_pretrained(str(name_or_dir)).to_dict()
  return EncoderConfig.from_hf(hf_config, **overrides)


class TensorSource:
  """Named tensors of a checkpoint: names, shapes, and rectangular slices as numpy."""

  def __init__(self, directory: pathlib.Path):
    self.directory = directory
    files = {name: directory / name for name in WEIGHT_FILES}
    self._handles: dict[pathlib.Path, Any] = {}
    self._torch: dict[str, np.ndarray] = {}
    if files[SAFETENSORS].is_file():
      self._file_of = self._safetensors_names([files[SAFETENSORS]])
    elif files[SAFETENSORS_INDEX].is_file():
      self._file_of = self._index(files[SAFETENSORS_INDEX])
    elif files[TORCH_BIN].is_file():
      self._load_torch([files[TORCH_BIN]])
    elif files[TORCH_BIN_INDEX].is_file():
      self._load_torch(sorted(set(self._index(files[TORCH_BIN_INDEX]).values())))
    else:
      present = sorted(p.name for p in directory.iterdir())
      raise FileNotFoundError(
          f"{directory}: no weights; looked for {', '.join(WEIGHT_FILES)}; "
          f"the directory holds {present}"
      )

  def _index(self, index_file: pathlib.Path) -> dict[str, pathlib.Path]:
    weight_map = json.loads(index_file.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index_file}: expected a 'weight_map' object (tensor name -> file)")
    return {name: self.directory / f for name, f in weight_map.items()}

  def _safetensors_names(self, files: Sequence[pathlib.Path]) -> dict[str, pathlib.Path]:
    return {name: f for f in files for name in self._handle(f).keys()}

  def _handle(self, f: pathlib.Path):
    if f not in self._handles:
      from safetensors import safe_open  # pylint: disable=g-import-not-at-top

      self._handles[f] = safe_open(str(f), framework="numpy")
    return self._handles[f]

  def _load_torch(self, files: Sequence[pathlib.Path]) -> None:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"{files[0]}: reading PyTorch .bin checkpoints needs torch; install it "
          "or convert the checkpoint to safetensors"
      ) from e
    for f in files:
      for name, t in torch.load(f, map_location="cpu", weights_only=True).items():
        self._torch[name] = t.float().numpy() if t.is_floating_point() else t.numpy()
    self._file_of = {name: files[0] for name in self._torch}

  def names(self) -> list[str]:
    return list(self._file_of)

  def shape(self, name: str) -> tuple[int, ...]:
    if self._torch:
      return tuple(self._torch[name].shape)
    return tuple(self._handle(self._file_of[name]).get_slice(name).get_shape())

  def read(self, name: str, index: Optional[tuple[slice, ...]] = None) -> np.ndarray:
    """The tensor, or its slice `index` (one slice per dimension)."""
    if self._torch:
      return self._torch[name] if index is None else self._torch[name][index]
    handle = self._handle(self._file_of[name])
    return handle.get_tensor(name) if index is None else handle.get_slice(name)[index]


class ArraySource:
  """In-memory named tensors (PyTorch names and layouts) with TensorSource's reading interface."""

  def __init__(self, tensors: Mapping[str, np.ndarray], label: str = "<tensors>"):
    self.directory = label
    self._tensors = dict(tensors)

  def names(self) -> list[str]:
    return list(self._tensors)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._tensors[name].shape)

  def read(self, name: str, index: Optional[tuple[slice, ...]] = None) -> np.ndarray:
    value = np.asarray(self._tensors[name])
    return value if index is None else value[index]


# ----------------------------------------------------------------------------- layouts


def _hf_shape(layout: str, ours: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape that becomes `ours` (one layer's shape) under `layout`."""
  if layout == "copy":
    return ours
  if layout == "linear":
    return ours[::-1]
  if layout == "heads_out":  # [H, N, D]
    return (ours[1] * ours[2], ours[0])
  if layout == "heads_bias":  # [N, D]
    return (ours[0] * ours[1],)
  if layout == "heads_in":  # [N, D, H]
    return (ours[2], ours[0] * ours[1])
  raise ValueError(f"unknown layout {layout!r}")


def _head_rows(heads: slice, head_dim: int) -> slice:
  """Rows/cols of the fused [N*D] axis that hold the heads in `heads` (all D of each)."""
  return slice(heads.start * head_dim, heads.stop * head_dim)


def _read_layout(
    src: TensorSource, name: str, layout: str, ours: tuple[int, ...], index: tuple[slice, ...]
) -> np.ndarray:
  """`index` (one layer, our layout, normalised slices) read from the PyTorch tensor `name`."""
  if layout == "copy":
    return src.read(name, index)
  if layout == "linear":
    return src.read(name, index[::-1]).T
  if layout == "heads_out":  # ours [H, N, D] <- [N*D, H]
    h, n, d = index
    x = src.read(name, (_head_rows(n, ours[2]), h)).T
    return x.reshape(x.shape[0], -1, ours[2])[:, :, d]
  if layout == "heads_bias":  # ours [N, D] <- [N*D]
    n, d = index
    return src.read(name, (_head_rows(n, ours[1]),)).reshape(-1, ours[1])[:, d]
  if layout == "heads_in":  # ours [N, D, H] <- [H, N*D]
    n, d, h = index
    x = src.read(name, (h, _head_rows(n, ours[1]))).T
    return x.reshape(-1, ours[1], x.shape[1])[:, d, :]
  raise ValueError(f"unknown layout {layout!r}")


def _write_layout(layout: str, x: np.ndarray) -> np.ndarray:
  """One layer of our parameter -> the PyTorch tensor (the inverse of `_read_layout`)."""
  if layout == "copy":
    return x
  if layout == "linear":  # [in, out] -> [out, in]
    return x.T
  if layout == "heads_out":  # [H, N, D] -> [N*D, H]
    return x.reshape(x.shape[0], -1).T
  if layout == "heads_bias":  # [N, D] -> [N*D]
    return x.reshape(-1)
  if layout == "heads_in":  # [N, D, H] -> [H, N*D]
    return x.reshape(-1, x.shape[-1]).T
  raise ValueError(f"unknown layout {layout!r}")


def _normalise(index: tuple, shape: tuple[int, ...]) -> tuple[slice, ...]:
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  out = []
  for s, n in zip(index, shape):
    start, stop, step = s.indices(n)
    if step != 1:
      raise ValueError(f"strided shard index {s} is not supported")
    out.append(slice(start, stop))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class _Target:
  """One encoder parameter and where its values come from."""

  path: str
  shape: tuple[int, ...]
  dtype: Any
  names: tuple[str, ...]  # one PyTorch name, or one per layer (stacked)
  layout: str

  @property
  def stacked(self) -> bool:
    return self.path.startswith("layers/")

  def read(self, src: TensorSource, index: tuple) -> np.ndarray:
    """Any rectangular slice of this parameter, in its dtype."""
    index = _normalise(index, self.shape)
    if not self.stacked:
      return _read_layout(src, self.names[0], self.layout, self.shape, index).astype(self.dtype)
    layers = range(index[0].start, index[0].stop)
    per_layer = [
        _read_layout(src, self.names[i], self.layout, self.shape[1:], index[1:]) for i in layers
    ]
    return np.stack(per_layer).astype(self.dtype)


def param_map_of(config: EncoderConfig) -> dict[str, tuple[str, str]]:
  """Our encoder path -> (PyTorch name template, layout) for this architecture."""
  return PRE_LN_PARAM_MAP if config.pre_layer_norm else PARAM_MAP


def hf_names(path: str, config: EncoderConfig) -> tuple[str, ...]:
  """The `XLMRobertaModel.state_dict()` names of our encoder parameter `path` (one per layer
  if stacked): 'layers/output_ln/scale' -> ('encoder.layer.0.output.LayerNorm.weight', ...)."""
  param_map = param_map_of(config)
  if path not in param_map:
    raise KeyError(f"{path!r} is not an encoder parameter; known: {', '.join(param_map)}")
  template = param_map[path][0]
  layers = config.num_layers if "{i}" in template else 1
  return tuple(template.format(i=i) for i in range(layers))


def to_hf_tensors(params: Mapping[str, Any], config: EncoderConfig) -> dict[str, np.ndarray]:
  """Our encoder parameters (path -> array, e.g. 'layers/output_ln/scale' [L, H]) -> PyTorch
  `XLMRobertaModel.state_dict()` names and layouts (stacked parameters: one tensor per layer)."""
  out = {}
  for path, value in params.items():
    names, layout = hf_names(path, config), param_map_of(config)[path][1]
    value = np.asarray(value)
    stacked = path.startswith("layers/")
    for i, name in enumerate(names):
      out[name] = np.ascontiguousarray(_write_layout(layout, value[i] if stacked else value))
  return out


def _find_prefix(src: TensorSource) -> str:
  names = set(src.names())
  for prefix in _PREFIXES:
    if f"{prefix}embeddings.word_embeddings.weight" in names:
      return prefix
  raise ValueError(
      f"{src.directory}: no 'embeddings.word_embeddings.weight' (with prefix "
      f"{' or '.join(repr(p) for p in _PREFIXES)}); not an XLM-R checkpoint? "
      f"First tensors: {sorted(names)[:10]}"
  )


def _check_shapes(src: Any, target: _Target) -> None:
  expected = _hf_shape(target.layout, target.shape[1:] if target.stacked else target.shape)
  for n in target.names:
    if src.shape(n) != expected:
      raise ValueError(
          f"{src.directory}: tensor {n} has shape {src.shape(n)}, but encoder "
          f"parameter {target.path} {target.shape} needs {expected} (PyTorch layout)"
      )


def _targets(
    params: Mapping[str, Any],
    src: TensorSource,
    config: EncoderConfig,
    allow_missing: Sequence[str],
) -> tuple[list[_Target], list[str], list[str]]:
  """Matches our parameters with checkpoint tensors; checks names and shapes."""
  prefix = _find_prefix(src)
  available = set(src.names())
  targets, missing, initialised, used = [], [], [], set()
  param_map = param_map_of(config)
  if set(params) != set(param_map):
    raise ValueError(
        f"encoder parameters {sorted(params)} do not match the checkpoint mapping "
        f"{sorted(param_map)}"
    )
  for path, (_, layout) in param_map.items():
    shape, dtype = tuple(params[path].shape), params[path].dtype
    names = tuple(prefix + name for name in hf_names(path, config))
    absent = [n for n in names if n not in available]
    if absent:
      if any(re.search(p, path) for p in allow_missing):
        initialised.append(path)
        continue
      missing.extend(absent)
      continue
    target = _Target(path, shape, dtype, names, layout)
    _check_shapes(src, target)
    used.update(names)
    targets.append(target)
  if missing:
    raise ValueError(f"{src.directory}: missing tensors for the encoder: {missing}")
  ignored = sorted(available - used)
  unexpected = [n for n in ignored if not _IGNORED.search(n)]
  if unexpected:
    raise ValueError(
        f"{src.directory}: unexpected tensors (not pooler/lm_head/position_ids): {unexpected}"
    )
  return targets, ignored, initialised


# ----------------------------------------------------------------------------- loading


def _flat(tree: Any) -> dict[str, Any]:
  """'a/b/c' -> leaf for a State, a nested dict or a flat dict; Variables give their values."""
  is_leaf = lambda x: isinstance(x, (nnx.Variable, jax.sharding.Sharding))
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]:
    keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    out["/".join(keys)] = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
  return out


def _device_sharding(value: Any) -> Optional[jax.sharding.Sharding]:
  """An existing multi-device placement of a parameter, to be kept when reloading it."""
  sharding = getattr(value, "sharding", None)
  if isinstance(value, jax.Array) and sharding is not None and len(sharding.device_set) > 1:
    return sharding
  return None


def _build(
    target: _Target, src: TensorSource, sharding: Optional[jax.sharding.Sharding]
) -> jax.Array:
  if sharding is None:
    return jnp.asarray(target.read(src, ()))  # whole parameter
  return jax.make_array_from_callback(target.shape, sharding, lambda idx: target.read(src, idx))


def _replace(encoder: XLMREncoder, state: Any, values: Mapping[str, jax.Array]) -> None:
  """Sets the parameters at `values`' paths ('a/b/c'); the others keep their values."""
  nested: dict[str, Any] = {}
  for path, value in values.items():
    node = nested
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  nnx.replace_by_pure_dict(state, nested)
  nnx.update(encoder, state)


def load_encoder_weights(
    encoder: XLMREncoder,
    name_or_dir: PathLike,
    *,
    shardings: Any = None,
    allow_missing: Sequence[str] = (),
) -> LoadReport:
  """Replaces `encoder`'s parameters in place with a Hugging Face checkpoint's.

  `shardings`: a `jax.sharding.Sharding` for every parameter (an `nnx.State` / nested dict of
  them matching the encoder's params, a flat dict keyed by path, or one Sharding for all). Each
  device then reads only its slice. Without it, parameters already placed on several devices
  keep their placement; the others are loaded whole. `allow_missing`: regexes of our parameter
  paths that may stay at their initial values when the checkpoint lacks them.
  """
  directory = resolve_checkpoint(name_or_dir)
  src = TensorSource(directory)
  state = nnx.state(encoder, nnx.Param)
  params = _flat(state)
  targets, ignored, initialised = _targets(params, src, encoder.config, allow_missing)
  if isinstance(shardings, jax.sharding.Sharding):
    placement = {path: shardings for path in params}
  elif shardings is not None:
    placement = _flat(shardings)
    absent = sorted(set(params) - set(placement))
    if absent:
      raise ValueError(f"shardings lack entries for encoder parameters {absent}")
  else:
    placement = {path: _device_sharding(v) for path, v in params.items()}
  values = {t.path: _build(t, src, placement[t.path]) for t in targets}
  _replace(encoder, state, values)
  report = LoadReport(directory, sorted(values), ignored, initialised)
  logging.info("%s", report)
  return report


def load_mlm_head_weights(name_or_dir: PathLike) -> Optional[dict[str, np.ndarray]]:
  """The checkpoint's `lm_head.*` tensors in PyTorch layout, keyed without the `lm_head.` prefix
  (`dense.weight` [H, H] as [out, in], `dense.bias`, `layer_norm.weight`, `layer_norm.bias`,
  `bias` [V]), as `heads.MLMHead.load_hf` takes them; None when the checkpoint has no MLM head.
  The decoder weight is tied to `embeddings/word` and is not returned.
  """
  src = TensorSource(resolve_checkpoint(name_or_dir))
  names = set(src.names())
  if not any(n.startswith("lm_head.") for n in names):
    return None
  out = {}
  for key in _MLM_HEAD:
    name = f"lm_head.{key}"
    if key == "bias" and name not in names:
      name = "lm_head.decoder.bias"
    if name in names:
      out[key] = np.asarray(src.read(name), np.float32)
  return out


def from_hf_tensors(
    tensors: Mapping[str, np.ndarray],
    config: EncoderConfig,
    like: Mapping[str, Any],
    *,
    source: str = "<tensors>",
) -> dict[str, np.ndarray]:
  """The inverse of `to_hf_tensors`: tensors under `XLMRobertaModel.state_dict()` names, PyTorch
  layout -> our encoder parameters (path -> array), each shaped and typed as `like[path]` (an
  array or ShapeDtypeStruct of our layout). A stacked parameter needs all of its layers.
  `source` names the tensors in errors."""
  owner = {name: path for path in param_map_of(config) for name in hf_names(path, config)}
  unknown = sorted(set(tensors) - set(owner))
  if unknown:
    raise ValueError(
        f"{source}: {unknown} are not parameters of this encoder (XLMRobertaModel "
        f"names, e.g. {next(iter(owner))!r})"
    )
  src = ArraySource(tensors, source)
  values = {}
  for path in sorted({owner[name] for name in tensors}):
    names, layout = hf_names(path, config), param_map_of(config)[path][1]
    absent = [n for n in names if n not in tensors]
    if absent:
      raise ValueError(f"{source}: has part of {path} but lacks {absent}")
    target = _Target(path, tuple(like[path].shape), like[path].dtype, names, layout)
    _check_shapes(src, target)
    values[path] = target.read(src, ())
  return values


def apply_hf_tensors(
    encoder: XLMREncoder, tensors: Mapping[str, np.ndarray], *, source: str = "<tensors>"
) -> list[str]:
  """Replaces the encoder parameters named by `tensors` (`XLMRobertaModel.state_dict()` names,
  PyTorch layout, as `to_hf_tensors` writes them); returns our paths that changed. A stacked
  parameter needs all of its layers. `source` names the tensors in errors."""
  state = nnx.state(encoder, nnx.Param)
  values = from_hf_tensors(tensors, encoder.config, _flat(state), source=source)
  _replace(encoder, state, {path: jnp.asarray(v) for path, v in values.items()})
  return sorted(values)
