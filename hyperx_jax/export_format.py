"""The export format, in one place: file names, version, tensor names, head layout.

What `python -m hyperx_jax.export` writes for one (task, language), and what the JAX reader
(`export.load_static_adapter`), the PyTorch loader (`torch_loader.load_exported`, no JAX) and the
AdapterHub writer read. This module imports neither JAX nor PyTorch.

Files of an export directory:

  ADAPTER_FILE   adapters.{k}.{field} [L, ...] per stack entry k (ADAPTER_FIELDS; kernels
                 [in, out], JAX layout) and head.{layer}.{kernel|bias} (HEAD_LAYERS)
  BACKBONE_FILE  the trained encoder parameters, `XLMRobertaModel.state_dict()` names and layout
  CONFIG_FILE    what the export is (FORMAT, the task, labels with id2label, sizes, placement,
                 ...); written last, so its presence marks a complete export
  README_FILE    the model card: base model, task, language, labels, the run's metrics and
                 provenance, how to load it (huggingface_hub.ModelCard reads it)
  tokenizer.json, tokenizer_config.json, ...  the run's tokenizer (AutoTokenizer reads the
                 directory)
"""

from __future__ import annotations

import json
import os
from typing import Any

from hyperx_jax.config.vocabulary import PAIR, TOKEN
from hyperx_jax.errors import UserError

# v2: + the trained backbone parameters; v3: its own config file name, id2label, the tokenizer
# and the model card
FORMAT = "hyperx_jax.static_adapter.v3"
CONFIG_FILE = "hyperx_export.json"  # a name no other library's loader reads
LEGACY_CONFIG_FILE = "adapter_config.json"  # v2 and older (peft and AdapterHub use this name)
README_FILE = "README.md"
ADAPTER_FILE = "adapter.safetensors"
BACKBONE_FILE = "backbone.safetensors"
FORMATS = ("native", "adapterhub")  # --format: ours; ours + AdapterHub directories
# The adapter stack of each method, bottom first (MAD-X: the language adapter under the task's).
STACK_NAMES = {"hyperx": ("hyperx",), "task_adapters": ("task",), "madx": ("language", "task")}
ADAPTER_FIELDS = ("down", "down_bias", "up", "up_bias", "ln_scale", "ln_bias")
REQUIRED_ADAPTER_FIELDS = ADAPTER_FIELDS[:4]  # the LayerNorm is optional (adapter.layer_norm)
ADAPTER_LN_EPS = 1e-5  # the adapter's own LayerNorm (PyTorch nn.LayerNorm's default)
HEAD_PREFIX = "head."
# The dense layers of each task kind's head, in order: the pair head pools, then dense -> tanh ->
# out_proj; the token head is one dense layer on every token.
HEAD_LAYERS = {PAIR: ("dense", "out_proj"), TOKEN: ("out",)}
ADAPTERHUB_VERSION = "adapters.1.3.0"  # the `adapters` release whose format is written
# Where those layers sit in AdapterHub's heads (ClassificationHead: Dropout, Linear, tanh,
# Dropout, Linear; TaggingHead: Dropout, Linear).
ADAPTERHUB_HEAD_INDICES = {PAIR: (1, 4), TOKEN: (1,)}


def adapter_tensor(k: int, field: str) -> str:
  """'adapters.{k}.{field}': stack entry k's tensor, stacked over layers."""
  return f"adapters.{k}.{field}"


def head_tensor(layer: str, param: str) -> str:
  """'head.{layer}.{param}' (param: 'kernel' [in, out] or 'bias')."""
  return f"{HEAD_PREFIX}{layer}.{param}"


class ExportFormatError(UserError):
  """A directory that is not a complete export of this format."""


def read_config(directory: str) -> dict[str, Any]:
  """CONFIG_FILE of an export directory, its format checked."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path) and os.path.exists(os.path.join(directory, LEGACY_CONFIG_FILE)):
    raise ExportFormatError(
        f"{directory}: an export of an older version ({LEGACY_CONFIG_FILE}); export the run "
        "again (hyperx export)"
    )
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {directory!r} an export of `hyperx export`?")
  with open(path) as f:
    config = json.load(f)
  if config.get("format") != FORMAT:
    raise ExportFormatError(
        f"{path}: format {config.get('format')!r}, expected {FORMAT!r}: export the run again "
        "(hyperx export)"
    )
  return config
