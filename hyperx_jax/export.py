"""A generated adapter as a standalone static adapter (no hypernetwork needed to run it).

    python -m hyperx_jax.export --workdir=RUN --task=ner --lang=tr --out=DIR [--step=N]
                                [--allow_fallback]

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

`adapter_config.json`: format, method, task, task_kind, labels, language, hidden_size,
bottleneck, num_layers, placement, layer_norm, num_adapters, stack (names of the stack entries),
checkpoint (the base encoder: a hub id or directory), tokenizer, head_type, step, workdir.

`load_static_adapter(DIR)` reads it back: the adapter stack (AdapterWeights with leaves
[L, 1, ...], what `XLMREncoder(..., adapters=...)` takes), the head's parameters as a nested dict,
and the config; `build_head(config, head_params)` makes the head module.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from safetensors.numpy import load_file, save

from hyperx_jax import fileio, run
from hyperx_jax.models import heads as heads_lib
from hyperx_jax.models.adapters import AdapterWeights
from hyperx_jax.schema import MLM, PAIR, TOKEN

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
FORMAT = "hyperx_jax.static_adapter.v1"
STACK_NAMES = {"hyperx": ("hyperx",), "task_adapters": ("task",), "madx": ("language", "task")}


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
        raise ValueError(f"adapters[{k}].{field} has {value.shape[1]} groups; export takes one "
                         "(task, language) pair")
      out[f"adapters.{k}.{field}"] = _to_host(value[:, 0])
  return out


def head_tensors(head: nnx.Module) -> dict[str, np.ndarray]:
  """A head's parameters -> {'head.{path with dots}': array}."""
  flat = nnx.to_flat_state(nnx.state(head, nnx.Param))
  return {"head." + ".".join(str(k) for k in path): _to_host(v.get_value()) for path, v in flat}


def export_adapter(model: Any, spec: Any, task: str, lang: str, out_dir: str, *,
                   step: Optional[int] = None, workdir: Optional[str] = None) -> dict:
  """Writes (task, lang)'s adapter and task head from `model` (a HyperXModel) to `out_dir`.

  `spec` is the run's RunSpec (labels, placement, base checkpoint). Returns the written
  adapter config.
  """
  if spec.method == "full_finetune":
    raise ValueError("method 'full_finetune' has no adapters to export")
  task_id, lang_id = model.task_id(task), model.lang_id(lang)
  kind = model.task_kind(task)
  stack = model.adapter_weights(jnp.array([task_id]), jnp.array([lang_id]),
                                skip_task_adapter=(kind == MLM))
  tensors = {**adapter_tensors(stack), **head_tensors(model.heads[task])}
  down = tensors["adapters.0.down"]
  meta = {
      "format": FORMAT, "method": spec.method, "task": task, "task_kind": kind,
      "labels": list(spec.tasks[task].labels), "language": lang,
      "hidden_size": int(down.shape[1]), "bottleneck": int(down.shape[2]),
      "num_layers": int(down.shape[0]), "placement": spec.model.encoder.adapter_placement,
      "layer_norm": stack[0].ln_scale is not None, "num_adapters": len(stack),
      "stack": list(STACK_NAMES[spec.method][:len(stack)]),
      "checkpoint": spec.pretrained, "tokenizer": spec.tokenizer,
      "head_type": type(model.heads[task]).__name__, "step": step, "workdir": workdir,
  }
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    data = save(tensors, metadata={"format": FORMAT})
    fileio.atomic_write(os.path.join(out_dir, ADAPTER_FILE), lambda f: f.write(data), binary=True)
    fileio.atomic_write_text(os.path.join(out_dir, CONFIG_FILE), json.dumps(meta, indent=2))
  return meta


def load_static_adapter(directory: str) -> tuple[tuple[AdapterWeights, ...], dict, dict]:
  """Reads an exported adapter: (adapter stack, leaves [L, 1, ...]; head params (nested dict);
  adapter config)."""
  config_path = os.path.join(directory, CONFIG_FILE)
  tensor_path = os.path.join(directory, ADAPTER_FILE)
  for path in (config_path, tensor_path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} not found: is {directory!r} an exported adapter?")
  with open(config_path) as f:
    config = json.load(f)
  if config.get("format") != FORMAT:
    raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}")
  tensors = load_file(tensor_path)
  stack = []
  for k in range(config["num_adapters"]):
    fields = {}
    for field in AdapterWeights._fields:
      value = tensors.get(f"adapters.{k}.{field}")
      fields[field] = None if value is None else jnp.asarray(value)[:, None]
    missing = [f for f in ("down", "down_bias", "up", "up_bias") if fields[f] is None]
    if missing:
      raise ValueError(f"{tensor_path}: adapter {k} lacks {missing}")
    stack.append(AdapterWeights(**fields))
  head: dict[str, Any] = {}
  for name, value in tensors.items():
    if name.startswith("head."):
      node = head
      *parents, leaf = name[len("head."):].split(".")
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = jnp.asarray(value)
  return tuple(stack), head, config


def build_head(config: dict, head_params: dict, *, vocab_size: Optional[int] = None) -> nnx.Module:
  """The exported task head as a module (dropout off unless given an rng at call time)."""
  h = config["hidden_size"]
  rngs = nnx.Rngs(0)
  kind = config["task_kind"]
  if kind == PAIR:
    head = heads_lib.SequenceClassificationHead(h, len(config["labels"]), rngs=rngs)
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


def export_from_run(workdir: str, task: str, lang: str, out_dir: str, *,
                    step: Optional[int] = None, allow_fallback: bool = False) -> dict:
  """Restores a trained run (`run.restore`; an unreadable step is an error unless
  `allow_fallback`) and exports (task, lang)'s adapter and head."""
  trained = run.restore(workdir, step=step, allow_fallback=allow_fallback)
  return export_adapter(trained.model(), trained.spec, task, lang, out_dir, step=trained.step,
                        workdir=os.path.abspath(workdir))


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training run directory (config.json + checkpoints/).")
  flags.DEFINE_string("task", None, "Task name (a key of the run's config.tasks).")
  flags.DEFINE_string("lang", None, "Language (one of the run's config.languages).")
  flags.DEFINE_string("out", None, "Output directory (adapter.safetensors, adapter_config.json).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_bool("allow_fallback", False, "If the step is unreadable, export the latest "
                    "readable earlier one (default: stop with an error).")
  flags.mark_flags_as_required(["workdir", "task", "lang", "out"])


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  meta = export_from_run(f.workdir, f.task, f.lang, f.out, step=f.step,
                         allow_fallback=f.allow_fallback)
  print(f"exported {meta['task']}/{meta['language']} (step {meta['step']}, {meta['num_layers']} "
        f"layers, bottleneck {meta['bottleneck']}) to {f.out}")


if __name__ == "__main__":
  _define_flags()  # here, not at import: the module is also a library
  app.run(main)
