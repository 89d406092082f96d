"""Export one trained (task, language) as a standalone model: adapters, head, trained backbone.

    python -m hyperx_jax.export --workdir=RUN --task=ner --lang=tr --out=DIR [--step=N]
                                [--format=native|adapterhub] [--allow_fallback]

restores the run's config (`RUN/config.json`) and checkpoint (latest, or `--step`; an
unreadable one is an error unless --allow_fallback), asks the model for the adapter of
(task, language) and writes to DIR (each file atomically):

`adapter.safetensors` (float32, stacked over layers; L = layers, h = hidden, b = bottleneck):

    adapters.{k}.down        [L, h, b]   D_i (x @ down: input hidden -> bottleneck)
    adapters.{k}.down_bias   [L, b]
    adapters.{k}.up          [L, b, h]   U_i
    adapters.{k}.up_bias     [L, h]
    adapters.{k}.ln_scale    [L, h]      γ of the adapter's post-LayerNorm (if layer_norm)
    adapters.{k}.ln_bias     [L, h]      β
    head.{path}              the task head's parameters, NNX path with '.' (e.g. head.out.kernel)

k indexes the method's adapter stack, applied in order (Hyper-X and task adapters: one, k = 0;
MAD-X: k = 0 language adapter, k = 1 task adapter). Layer i computes

    A_i(z) = LN(U_i · ReLU(D_i · z + bD_i) + bU_i; γ_i, β_i) + z   (LN eps 1e-5)

placed per `placement` (docs/method.md). Kernels are [in, out] (JAX layout, not PyTorch's).

`backbone.safetensors`: every encoder parameter the run trained (the trainable rules' leaves
under `encoder/`; in practice the LayerNorms), named and laid out as in Hugging Face's
`XLMRobertaModel.state_dict()` (`encoder.layer.3.output.LayerNorm.weight`,
`embeddings.LayerNorm.bias`), so that base checkpoint + these tensors = the trained encoder:
`model.load_state_dict(safetensors.torch.load_file(path), strict=False)` in PyTorch,
`build_encoder` here. Frozen parameters equal the base checkpoint and are not written.

`hyperx_export.json` (written last: it marks a complete export): format, method, task,
task_kind, labels, id2label and label2id, pooling (pair tasks), language, hidden_size,
bottleneck, num_layers, placement, layer_norm, num_adapters, stack (names of the stack
entries), checkpoint (the base encoder: a hub id or directory), tokenizer, head_type,
backbone_file and backbone_tensors (what backbone.safetensors holds; null / [] when the run
trained no encoder parameter), adapterhub (below, or null), step and why, workdir.

The run's tokenizer files (`AutoTokenizer.from_pretrained(DIR)`), and `README.md`, the model
card (`hub.model_card`: base model, task, language, labels, the run's metrics and provenance,
how to load it). `--push_to_hub=OWNER/NAME` uploads the directory (`hub.push`).

`--format=adapterhub` also writes `DIR/adapterhub/{name}/` per stack entry (name from `stack`),
directories that the `adapters` library loads with `model.load_adapter(path,
use_safetensors=True)` onto its `XLMRobertaAdapterModel`; the last one carries the head. See
`adapterhub_config` for the exact correspondence and what AdapterHub cannot express.

`load_static_adapter(DIR)` reads it back (adapters [L, 1, ...], head parameters, backbone
tensors, config); `build_encoder` makes the trained encoder (base checkpoint + backbone) and
`build_head` the head. `hyperx_jax.torch_loader.load_exported` does the same in PyTorch,
without JAX.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from safetensors.numpy import load_file, save

from hyperx_jax import cli, export_format, fileio, hub, run
from hyperx_jax import tokenizer as tokenizers
from hyperx_jax.config import RunSpec, decode, environment
from hyperx_jax.config.vocabulary import MLM, PAIR, TOKEN
from hyperx_jax.errors import UserError
from hyperx_jax.models import heads as heads_lib
from hyperx_jax.models import weights
from hyperx_jax.models.adapters import AdapterWeights
from hyperx_jax.models.xlmr import EncoderConfig, XLMREncoder


def _to_host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x), np.float32)


def adapter_tensors(stack: Sequence[AdapterWeights]) -> dict[str, np.ndarray]:
  """Adapter stack with leaves [L, 1, ...] -> {'adapters.{k}.{field}': [L, ...]}."""
  out = {}
  for k, w in enumerate(stack):
    for field, value in w._asdict().items():
      if value is None:
        continue
      if value.shape[1] != 1:
        raise ValueError(
            f"adapters[{k}].{field} has {value.shape[1]} groups; export takes one "
            "(task, language) pair"
        )
      out[export_format.adapter_tensor(k, field)] = _to_host(value[:, 0])
  return out


def head_tensors(head: nnx.Module) -> dict[str, np.ndarray]:
  """A head's parameters -> {'head.{path with dots}': array}."""
  flat = nnx.to_flat_state(nnx.state(head, nnx.Param))
  return {
      export_format.HEAD_PREFIX + ".".join(str(k) for k in path): _to_host(v.get_value())
      for path, v in flat
  }


def backbone_tensors(model: Any, spec: Any) -> dict[str, np.ndarray]:
  """The encoder parameters the run trains (its trainable rules, leaves under `encoder/`), as
  `XLMRobertaModel.state_dict()` names -> PyTorch-layout arrays."""
  predicate, _ = run.trainable_predicate(spec, model)
  trained = {}
  for path, var in nnx.to_flat_state(nnx.state(model, predicate)):
    if path[0] == "encoder":
      trained["/".join(str(k) for k in path[1:])] = _to_host(var.get_value())
  return weights.to_hf_tensors(trained, model.encoder.config)


def check_adapterhub(spec: RunSpec, encoder: EncoderConfig, task: str) -> None:
  """Refuses, before anything loads, what AdapterHub cannot express exactly (the PyTorch loader
  `hyperx_jax.torch_loader.load_exported` is the exact alternative for all of them)."""
  spec_task = spec.tasks[task]
  alternative = "; use --format=native and hyperx_jax.torch_loader.load_exported"
  if encoder.pre_layer_norm:
    raise UserError(
        "--format=adapterhub: AdapterHub's XLM-R is the post-LayerNorm one; this "
        "run's encoder is pre-LN (XL/XXL)" + alternative
    )
  if encoder.adapter_placement != "ffn_output":
    raise UserError(
        f"--format=adapterhub: placement {encoder.adapter_placement!r} is not "
        "expressible (under a Stack AdapterHub's original_ln_before re-applies the "
        "layer's LayerNorm before every adapter); only 'ffn_output'" + alternative
    )
  h, b = encoder.hidden_size, spec.adapter.bottleneck
  if h % b:
    raise UserError(
        f"--format=adapterhub: AdapterHub sizes the bottleneck as hidden_size // "
        f"reduction_factor; bottleneck {b} does not divide hidden_size {h}"
    )
  if spec_task.kind == PAIR and spec_task.pooling != "cls":
    raise UserError(
        f"--format=adapterhub: task {task!r} pools by {spec_task.pooling!r}; "
        "AdapterHub's classification head reads the <s> token (or the pooler) only" + alternative
    )
  if spec_task.kind not in (PAIR, TOKEN):
    raise UserError(
        f"--format=adapterhub: no AdapterHub head for task {task!r} of kind "
        f"{spec_task.kind!r}" + alternative
    )


def adapterhub_config(meta: dict) -> dict:
  """The `adapters` library's BnConfig that computes our adapter exactly (ffn_output placement,
  post-LN encoder): its bottleneck layer gets f = Dropout(FFN(a)) and the attention block's
  output a, and with these options computes, per adapter in a Stack,

      residual = f (original_ln_before=False, residual_before_ln=True)
      f <- LN_adapter(up(ReLU(down(f))) * 1.0) + residual   (ln_after, adapter_residual_before_ln
                                                            False, scaling 1.0, no gating)
      out = LN_out(f + a)   after the last one            (original_ln_after=True)

  which is `LN_out(A_task(A_lang(f)) + a)` as in models/xlmr.py (`check_adapterhub` refuses
  what it cannot express)."""
  h, b = meta["hidden_size"], meta["bottleneck"]
  return {
      "mh_adapter": False,
      "output_adapter": True,
      "reduction_factor": h // b,
      "non_linearity": "relu",
      "original_ln_before": False,
      "original_ln_after": True,
      "residual_before_ln": True,
      "adapter_residual_before_ln": False,
      "ln_before": False,
      "ln_after": bool(meta["layer_norm"]),
      "scaling": 1.0,
      "use_gating": False,
      "dropout": 0.0,
      "init_weights": "bert",
      "is_parallel": False,
      "phm_layer": False,
      "leave_out": [],
  }


def adapterhub_head(
    meta: dict, tensors: dict[str, np.ndarray], name: str
) -> tuple[dict, dict[str, np.ndarray]]:
  """(head config, head tensors) of AdapterHub's head for ours: the pair head with 'cls'
  pooling is its ClassificationHead (Dropout, Linear H->H, tanh, Dropout, Linear H->n: indices
  1, 4); the token head its TaggingHead (Dropout, Linear: index 1)."""
  label2id = {label: i for i, label in enumerate(meta["labels"])}
  common = {
      "num_labels": len(label2id),
      "label2id": label2id,
      "dropout_prob": None,
      "activation_function": "tanh",
  }
  kind = meta["task_kind"]
  if kind == PAIR:
    config = {
        **common,
        "head_type": "classification",
        "layers": 2,
        "use_pooler": False,
        "bias": True,
    }
  else:
    config = {**common, "head_type": "tagging", "layers": 1}
  out = {}
  for index, layer in zip(
      export_format.ADAPTERHUB_HEAD_INDICES[kind], export_format.HEAD_LAYERS[kind]
  ):
    kernel = tensors[export_format.head_tensor(layer, "kernel")]
    out[f"heads.{name}.{index}.weight"] = np.ascontiguousarray(kernel.T)
    out[f"heads.{name}.{index}.bias"] = tensors[export_format.head_tensor(layer, "bias")]
  return config, out


def adapterhub_adapter(tensors: dict[str, np.ndarray], k: int, name: str) -> dict[str, np.ndarray]:
  """Stack entry k's tensors under AdapterHub's names (`roberta.` = XLMRobertaAdapterModel's
  base model; PyTorch Linear weights are [out, in])."""
  out = {}
  renames = {
      "down": "adapter_down.0.weight",
      "down_bias": "adapter_down.0.bias",
      "up": "adapter_up.weight",
      "up_bias": "adapter_up.bias",
      "ln_scale": "adapter_norm_after.weight",
      "ln_bias": "adapter_norm_after.bias",
  }
  for field, theirs in renames.items():
    value = tensors.get(export_format.adapter_tensor(k, field))
    if value is None:
      continue
    for i, layer in enumerate(value):
      layer = layer.T if field in ("down", "up") else layer
      out[f"roberta.encoder.layer.{i}.output.adapters.{name}.{theirs}"] = np.ascontiguousarray(
          layer
      )
  return out


def _adapterhub_files(meta: dict, tensors: dict[str, np.ndarray]) -> dict[str, bytes]:
  """'adapterhub/{name}/{file}' -> contents, for every stack entry (+ the head on the last)."""
  bn_config = adapterhub_config(meta)
  names = meta["stack"]
  head_config, head = adapterhub_head(meta, tensors, names[-1])
  about = {
      "hidden_size": meta["hidden_size"],
      "model_class": "XLMRobertaAdapterModel",
      "model_name": meta["checkpoint"],
      "model_type": "xlm-roberta",
      "version": export_format.ADAPTERHUB_VERSION,
  }
  files = {}
  for k, name in enumerate(names):
    files[f"adapterhub/{name}/adapter_config.json"] = json.dumps(
        {**about, "config": bn_config, "name": name}, indent=2
    ).encode()
    files[f"adapterhub/{name}/adapter.safetensors"] = save(adapterhub_adapter(tensors, k, name))
  files[f"adapterhub/{names[-1]}/head_config.json"] = json.dumps(
      {**about, "config": head_config, "name": names[-1]}, indent=2
  ).encode()
  files[f"adapterhub/{names[-1]}/model_head.safetensors"] = save(head)
  return files


def _check_format(format: str) -> None:  # pylint: disable=redefined-builtin
  if format not in export_format.FORMATS:
    raise UserError(f"unknown export format {format!r}; known: {', '.join(export_format.FORMATS)}")


def export_adapter(
    model: Any,
    spec: Any,
    task: str,
    lang: str,
    out_dir: str,
    *,
    step: Optional[int] = None,
    workdir: Optional[str] = None,
    format: str = "native",
    step_reason: Optional[str] = None,
) -> dict:  # pylint: disable=redefined-builtin
  """Writes (task, lang)'s adapter, task head and trained backbone parameters from `model` (a
  HyperXModel) to `out_dir`; `format='adapterhub'` adds the AdapterHub directories.

  `spec` is the run's RunSpec (labels, placement, base checkpoint, trainable rules). Returns
  the written adapter config. Everything is checked before anything is written.
  """
  _check_format(format)
  if spec.method == "full_finetune":
    raise UserError("method 'full_finetune' has no adapters to export")
  if format == "adapterhub":
    check_adapterhub(spec, model.encoder.config, task)
  task_id, lang_id = model.task_id(task), model.lang_id(lang)
  kind = model.task_kind(task)
  stack = model.adapter_weights(
      jnp.array([task_id]), jnp.array([lang_id]), skip_task_adapter=(kind == MLM)
  )
  tensors = {**adapter_tensors(stack), **head_tensors(model.heads[task])}
  backbone = backbone_tensors(model, spec)
  down = tensors["adapters.0.down"]
  encoder = model.encoder.config
  meta = {
      "format": export_format.FORMAT,
      "method": spec.method,
      "task": task,
      "task_kind": kind,
      "labels": list(spec.tasks[task].labels),
      "id2label": {str(i): label for i, label in enumerate(spec.tasks[task].labels)},
      "label2id": {label: i for i, label in enumerate(spec.tasks[task].labels)},
      "language": lang,
      "pooling": spec.tasks[task].pooling if kind == PAIR else None,
      "hidden_size": int(down.shape[1]),
      "bottleneck": int(down.shape[2]),
      "num_layers": int(down.shape[0]),
      "placement": encoder.adapter_placement,
      "layer_norm": stack[0].ln_scale is not None,
      "adapter_ln_eps": export_format.ADAPTER_LN_EPS,
      "num_adapters": len(stack),
      "stack": list(export_format.STACK_NAMES[spec.method][: len(stack)]),
      "checkpoint": spec.pretrained,
      "tokenizer": spec.tokenizer_path,
      "head_type": type(model.heads[task]).__name__,
      "backbone_file": export_format.BACKBONE_FILE if backbone else None,
      "backbone_tensors": sorted(backbone),
      "adapterhub": None,
      "step": step,
      "step_reason": step_reason,
      "workdir": workdir,
  }
  files = {}
  if format == "adapterhub":
    files = _adapterhub_files(meta, tensors)
    meta["adapterhub"] = {
        "adapters": [f"adapterhub/{n}" for n in meta["stack"]],
        "head": f"adapterhub/{meta['stack'][-1]}",
    }
  files[export_format.ADAPTER_FILE] = save(tensors, metadata={"format": export_format.FORMAT})
  if backbone:
    files[export_format.BACKBONE_FILE] = save(backbone, metadata={"format": export_format.FORMAT})
  files.update(tokenizer_files(spec.tokenizer_path))
  files[export_format.README_FILE] = hub.model_card(meta, run_results(workdir)).encode()
  files[export_format.CONFIG_FILE] = json.dumps(meta, indent=2).encode()  # last: marks it complete
  if jax.process_index() == 0:
    for name, data in files.items():
      path = os.path.join(out_dir, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fileio.atomic_write(path, lambda f, data=data: f.write(data), binary=True)
  return meta


def tokenizer_files(name_or_dir: str) -> dict[str, bytes]:
  """The run's tokenizer as the files `save_pretrained` writes (name -> contents)."""
  import tempfile  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    tokenizers.load_tokenizer(name_or_dir).save_pretrained(tmp)
    return {
        name: open(os.path.join(tmp, name), "rb").read()
        for name in sorted(os.listdir(tmp))
        if os.path.isfile(os.path.join(tmp, name))
    }


def run_results(workdir: Optional[str]) -> Optional[dict]:
  """The run's results.json (entries and provenance), where it has one."""
  path = os.path.join(workdir, "results.json") if workdir else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class Exported(NamedTuple):
  """An export read back (`load_static_adapter`)."""

  adapters: tuple[AdapterWeights, ...]  # leaves [L, 1, ...], what XLMREncoder(adapters=) takes
  head: dict  # the head's parameters, nested
  backbone: dict[str, np.ndarray]  # trained encoder parameters, XLMRobertaModel names
  config: dict  # hyperx_export.json


def load_static_adapter(directory: str) -> Exported:
  """Reads an export written by `export_adapter`."""
  config = export_format.read_config(directory)
  config_path = os.path.join(directory, export_format.CONFIG_FILE)
  tensor_path = os.path.join(directory, export_format.ADAPTER_FILE)
  if not os.path.exists(tensor_path):
    raise FileNotFoundError(f"{tensor_path} not found: is {directory!r} an exported adapter?")
  tensors = load_file(tensor_path)
  stack = []
  for k in range(config["num_adapters"]):
    fields = {}
    for field in AdapterWeights._fields:
      value = tensors.get(export_format.adapter_tensor(k, field))
      fields[field] = None if value is None else jnp.asarray(value)[:, None]
    missing = [f for f in export_format.REQUIRED_ADAPTER_FIELDS if fields[f] is None]
    if missing:
      raise ValueError(f"{tensor_path}: adapter {k} lacks {missing}")
    stack.append(AdapterWeights(**fields))
  head: dict[str, Any] = {}
  for name, value in tensors.items():
    if name.startswith(export_format.HEAD_PREFIX):
      node = head
      *parents, leaf = name[len(export_format.HEAD_PREFIX) :].split(".")
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = jnp.asarray(value)
  backbone = {}
  if config["backbone_file"]:
    backbone_path = os.path.join(directory, config["backbone_file"])
    backbone = load_file(backbone_path)
    if sorted(backbone) != config["backbone_tensors"]:
      raise ValueError(
          f"{backbone_path} holds {sorted(backbone)}, {config_path} lists "
          f"{config['backbone_tensors']}"
      )
  return Exported(tuple(stack), head, backbone, config)


def build_encoder(exported: Exported, checkpoint: Optional[str] = None, **overrides) -> XLMREncoder:
  """The trained encoder: the base checkpoint (`checkpoint`, default the one the run started
  from) with the exported backbone parameters applied; run it with `adapters=exported.adapters`.
  `overrides`: EncoderConfig fields (e.g. scan_layers=False)."""
  checkpoint = checkpoint or exported.config["checkpoint"]
  config = weights.encoder_config_from_checkpoint(
      checkpoint, adapter_placement=exported.config["placement"], **overrides
  )
  encoder = XLMREncoder(config, rngs=nnx.Rngs(0))
  weights.load_encoder_weights(encoder, checkpoint)
  weights.apply_hf_tensors(encoder, exported.backbone, source=exported.config["backbone_file"])
  return encoder


def build_head(config: dict, head_params: dict, *, vocab_size: Optional[int] = None) -> nnx.Module:
  """The exported task head as a module (dropout off unless given an rng at call time)."""
  h = config["hidden_size"]
  rngs = nnx.Rngs(0)
  kind = config["task_kind"]
  if kind == PAIR:
    head = heads_lib.SequenceClassificationHead(
        h, len(config["labels"]), rngs=rngs, pooling=config["pooling"]
    )
  elif kind == TOKEN:
    head = heads_lib.TokenClassificationHead(h, len(config["labels"]), rngs=rngs)
  elif kind == MLM:
    if vocab_size is None:
      raise ValueError("an mlm head needs vocab_size (its decoder is the word embeddings)")
    head = heads_lib.MLMHead(h, vocab_size, rngs=rngs)
  else:
    raise ValueError(f"unknown task_kind {kind!r} in the adapter config")
  state = nnx.state(head, nnx.Param)
  nnx.replace_by_pure_dict(state, head_params)
  nnx.update(head, state)
  return head


def check_names(workdir: str, task: str, lang: str) -> None:
  """Unknown task / language names are errors that list the run's (before anything loads)."""
  config = run.load_config(workdir)
  tasks, languages = list(config.tasks), list(config.languages)
  if task not in tasks:
    raise UserError(f"{workdir}: unknown task {task!r}; the run's tasks: {', '.join(tasks)}")
  if lang not in languages:
    raise UserError(
        f"{workdir}: unknown language {lang!r}; the run's languages: {', '.join(languages)}"
    )


def export_from_run(
    workdir: str,
    task: str,
    lang: str,
    out_dir: str,
    *,
    step: Union[str, int] = "best",
    allow_fallback: bool = False,
    format: str = "native",
) -> dict:  # pylint: disable=redefined-builtin
  """Restores a trained run (`run.restore`; an unreadable step is an error unless
  `allow_fallback`) and exports (task, lang)."""
  _check_format(format)
  check_names(workdir, task, lang)
  if format == "adapterhub":
    spec = decode(run.load_config(workdir))
    check_adapterhub(spec, environment.encoder_config(spec, strict_attention=False), task)
  trained = run.restore(workdir, step=step, allow_fallback=allow_fallback)
  return export_adapter(
      trained.model(),
      trained.spec,
      task,
      lang,
      out_dir,
      step=trained.step,
      workdir=os.path.abspath(workdir),
      format=format,
      step_reason=trained.step_reason,
  )


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training run directory (config.json + checkpoints/).")
  flags.DEFINE_string("task", None, "Task name (a key of the run's config.tasks).")
  flags.DEFINE_string("lang", None, "Language (one of the run's config.languages).")
  flags.DEFINE_string(
      "out",
      None,
      "Output directory (adapter.safetensors, backbone.safetensors, hyperx_export.json, the "
      "tokenizer, README.md: the model card).",
  )
  cli.define_step_flag()
  flags.DEFINE_enum(
      "format",
      "native",
      list(export_format.FORMATS),
      "native: ours (JAX and the "
      "PyTorch loader read it); adapterhub: also AdapterHub adapter directories.",
  )
  flags.DEFINE_bool(
      "allow_fallback",
      False,
      "If the step is unreadable, export the latest "
      "readable earlier one (default: stop with an error).",
  )
  flags.DEFINE_string(
      "push_to_hub",
      None,
      "OWNER/NAME: then upload the export (with its model card) to this Hugging Face hub "
      "repository, created if missing (huggingface_hub: HF_TOKEN or `hf auth login`).",
  )
  flags.DEFINE_bool("private", False, "With --push_to_hub: create the repository private.")
  flags.mark_flags_as_required(["workdir", "task", "lang", "out"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  meta = export_from_run(
      f.workdir,
      f.task,
      f.lang,
      f.out,
      step=f.step,
      allow_fallback=f.allow_fallback,
      format=f.format,
  )
  print(
      f"exported {meta['task']}/{meta['language']} of step {meta['step']} "
      f"({meta['step_reason']}; {meta['num_layers']} "
      f"layers, bottleneck {meta['bottleneck']}, {len(meta['backbone_tensors'])} backbone "
      f"tensors) to {f.out}"
  )
  if f.push_to_hub:
    url = hub.push(f.out, f.push_to_hub, private=f.private)
    print(f"pushed {f.out} to {url}")


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
