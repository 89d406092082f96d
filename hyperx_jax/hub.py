"""Sharing an export on the Hugging Face hub: its model card, and the upload.

`model_card(meta, results)` writes the README.md of an export directory (`export_format`):
YAML metadata the hub indexes (base model, language, library, tags, metrics) and the text a
reader needs: the task and its labels, the run's metrics for this (task, language) and where
they came from (provenance of results.json), and how to load it in PyTorch
(`hyperx_jax.torch_loader`) and in AdapterHub (`adapters`). `push(directory, repo_id)` creates
the repository if needed and uploads the directory (`huggingface_hub.HfApi`). This module
imports neither JAX nor PyTorch.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from hyperx_jax.errors import UserError

LIBRARY = "hyperx_jax"
# str.format first (the doubled braces), then ModelCard.from_template renders card_data with jinja
TEMPLATE = """---
{{{{ card_data }}}}
---

# {title}

A **{method}** export of `hyperx_jax` (Hyper-X in JAX/Flax): the adapters that {how} for the task **{task}**
({kind}) in **{language}**, with the task head and the encoder parameters the run trained, on
top of the frozen encoder [`{base}`](https://huggingface.co/{base}).

Labels ({n_labels}): {labels}.

## Results of the run

{results}

## Load it

In PyTorch, on plain `transformers` (the adapters are hooked into `XLMRobertaOutput`):

```python
from hyperx_jax.torch_loader import load_exported
model = load_exported("{repo_or_dir}")   # a local copy of this repository
out = model(input_ids, attention_mask)   # out.logits, out.hidden_states
```

In JAX: `hyperx_jax.export.load_static_adapter(DIR)`, then `build_encoder` and `build_head`.
{adapterhub}
The tokenizer is in this directory (`AutoTokenizer.from_pretrained(DIR)`).

## How it was made

{provenance}
"""


def _results_text(results: Optional[Mapping[str, Any]], key: str) -> str:
  if not results or key not in results:
    return f"The run's results.json has no entry for `{key}`."
  entry = results[key]
  metrics = ", ".join(
      f"{name} {100 * float(v):.1f} %"
      for name, v in entry.items()
      if isinstance(v, (int, float)) and not isinstance(v, bool) and name != "examples"
  )
  setting = (
      "zero-shot (no training data of this task in this language)"
      if entry.get("zero_shot")
      else "trained (seen) pair"
  )
  return f"`{key}`, {setting}: {metrics} on {entry.get('examples', '?')} test examples."


def model_card(
    meta: Mapping[str, Any],
    results: Optional[Mapping[str, Any]] = None,
    repo_id: Optional[str] = None,
) -> str:
  """The README.md of an export (`meta`: its hyperx_export.json; `results`: the run's
  results.json, entries and provenance)."""
  from huggingface_hub import ModelCard, ModelCardData  # pylint: disable=g-import-not-at-top

  key = f"{meta['task']}:{meta['language']}"
  entry = (results or {}).get(key) or {}
  metric_names = [m for m in entry if m not in ("examples", "zero_shot")]
  card_data = ModelCardData(
      language=[meta["language"].split("_")[0]],
      license="apache-2.0",
      library_name=LIBRARY,
      base_model=meta["checkpoint"]
      if "/" in str(meta["checkpoint"]) and not str(meta["checkpoint"]).startswith(("/", ".", "~"))
      else None,
      tags=["hyper-x", "adapters", meta["method"], meta["task_kind"]],
      metrics=metric_names or None,
  )
  provenance = (results or {}).get("provenance")
  adapterhub = ""
  if meta.get("adapterhub"):
    adapterhub = (
        "\nIn AdapterHub (`adapters`): `model.load_adapter(DIR/<name>, use_safetensors=True)` "
        f"for each of {meta['adapterhub']['adapters']} onto `XLMRobertaAdapterModel`, then "
        "`model.set_active_adapters(Stack(...))`; the head comes with the last one.\n"
    )
  text = TEMPLATE.format(
      title=f"{meta['task']} in {meta['language']} ({meta['method']})",
      method={"hyperx": "Hyper-X", "task_adapters": "task-adapter", "madx": "MAD-X"}.get(
          meta["method"], meta["method"]
      ),
      how=(
          "the hypernetwork generated from the task, language and layer embeddings"
          if meta["method"] == "hyperx"
          else "the run trained"
      ),
      task=meta["task"],
      kind=meta["task_kind"],
      language=meta["language"],
      base=meta["checkpoint"],
      n_labels=len(meta["labels"]),
      labels=", ".join(f"`{label}`" for label in meta["labels"]),
      results=_results_text(results, key),
      repo_or_dir=repo_id or "EXPORT_DIR",
      adapterhub=adapterhub,
      provenance=(
          f"Checkpoint step {meta.get('step')} ({meta.get('step_reason') or 'as asked'}) of "
          f"the run in `{meta.get('workdir')}`.\n\n```json\n"
          + json.dumps(provenance, indent=2)
          + "\n```"
          if provenance
          else f"Checkpoint step {meta.get('step')} of `{meta.get('workdir')}`."
      ),
  )
  return str(ModelCard.from_template(card_data, template_str=text))


def push(
    directory: str, repo_id: str, *, private: bool = False, token: Optional[str] = None
) -> str:
  """Uploads an export directory to the hub repository `repo_id` (created if missing);
  returns its URL. Errors of the hub (no access, no permission) are UserErrors naming the
  repository; the local export is left as it is."""
  from huggingface_hub import HfApi  # pylint: disable=g-import-not-at-top

  if repo_id.count("/") != 1 or not all(repo_id.split("/")):
    raise UserError(f"--push_to_hub={repo_id!r}: expected OWNER/NAME")
  api = HfApi(token=token)
  try:
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=directory,
        repo_id=repo_id,
        repo_type="model",
        commit_message="Upload a hyperx_jax export",
    )
  except Exception as e:  # the hub's own errors: network, authentication, permissions
    raise UserError(
        f"could not push {directory} to the hub repository {repo_id}: "
        f"{type(e).__name__}: {e} (the export on disk is complete)"
    ) from e
  return str(url)
