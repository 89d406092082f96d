"""Runs exports with AdapterHub (the `adapters` library), in .venv-adapters (see
tests/test_export_torch.py): loads each export's `adapterhub/` directories onto
`XLMRobertaAdapterModel`, its trained LayerNorms in one call, stacks the adapters and writes the
head's logits and the last hidden states.

    .venv-adapters/bin/python tests/adapterhub_worker.py JOBS.json
    JOBS.json: {"base": CHECKPOINT_DIR, "jobs": [{"export": DIR, "inputs": NPZ, "out": NPZ}]}
"""

import json
import os
import sys

import numpy as np
import torch
from adapters import XLMRobertaAdapterModel
from adapters.composition import Stack
from safetensors.torch import load_file


def run(base: str, export: str, inputs: str, out: str) -> None:
  with open(os.path.join(export, "hyperx_export.json")) as f:
    config = json.load(f)
  hub = config["adapterhub"]
  model = XLMRobertaAdapterModel.from_pretrained(base)
  names = [
      model.load_adapter(
          os.path.join(export, path), use_safetensors=True, with_head=(path == hub["head"])
      )
      for path in hub["adapters"]
  ]
  loaded = model.base_model.load_state_dict(
      load_file(os.path.join(export, config["backbone_file"])), strict=False
  )
  assert not loaded.unexpected_keys, loaded.unexpected_keys
  model.active_adapters = Stack(*names)
  model.active_head = names[-1]
  model.eval()
  batch = np.load(inputs)
  with torch.no_grad():
    result = model(
        input_ids=torch.tensor(batch["input_ids"]),
        attention_mask=torch.tensor(batch["attention_mask"]),
        output_hidden_states=True,
    )
  np.savez(out, logits=result.logits.numpy(), hidden=result.hidden_states[-1].numpy())


def main() -> None:
  with open(sys.argv[1]) as f:
    spec = json.load(f)
  for job in spec["jobs"]:
    run(spec["base"], job["export"], job["inputs"], job["out"])


if __name__ == "__main__":
  main()
