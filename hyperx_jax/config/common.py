"""What experiment configs (`configs/<name>.py`) build on: the defaults and shared helpers.

    from hyperx_jax.config import common

    def get_config(arg=None):
      arg, c = common.experiment(arg)        # size, method, recipe, runlocal, data_dir
      c.tasks.ner = {'kind': 'token_classification', 'labels': list(common.NER_LABELS),
                     'metric': 'entity_f1'}
      ...

`get_config()` is the full config with every field at its default (each written once, in
`hyperx_jax/config/sections.py` and `spec.py`); experiment configs start from it and set their
tasks, languages and streams. `parse_arg` turns the `:size=large,runlocal` suffix of
`--config=configs/xnli.py:size=large,runlocal` into a ConfigDict of typed values. A config
file is loaded by its path, so it imports only the installed package, never its neighbours.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import ml_collections

from hyperx_jax.config import spec as run_spec
from hyperx_jax.config.spec import lr_multipliers, trainable_rules
from hyperx_jax.config.vocabulary import (
    DEV,
    HUB_DATASETS,
    METHODS,
    NER_LABELS,
    PACKING_OFF,
    TEST,
    TOKEN,
    UPOS_TAGS,
    XNLI_LABELS,
    XTREME_UDPOS_LANGUAGES,
)

# Hugging Face checkpoints per XLM-R size, and the mesh each one wants on a pod slice
# (the frozen backbone of XL/XXL needs FSDP and tensor parallelism; data axis takes the rest).
SIZES = {
    "base": ("FacebookAI/xlm-roberta-base", (-1, 1, 1)),
    "large": ("FacebookAI/xlm-roberta-large", (-1, 1, 1)),
    "xl": ("facebook/xlm-roberta-xl", (-1, 8, 1)),
    "xxl": ("facebook/xlm-roberta-xxl", (-1, 8, 4)),
}

XNLI_LANGUAGES = (
    "en",
    "fr",
    "es",
    "de",
    "el",
    "bg",
    "ru",
    "tr",
    "ar",
    "vi",
    "th",
    "zh",
    "hi",
    "sw",
    "ur",
)

# Training recipes. 'paper' is the authors': one Adam state for every parameter and generators
# that read the raw projection p. 'per_task' keeps one Adam state per task on the parameters
# every task shares (the hypernetwork or adapters, and the backbone LayerNorms), so each task's
# step there is normalised by its own gradient statistics rather than by those of the task with
# the largest gradients (masked LM), and the generators read p / |p| (unit projection), which
# bounds every generated adapter by the generators' own weights. The paper's recipe left the
# pair task at chance next to masked LM in both offline settings; see docs/method.md,
# "Optimiser", and docs/usage.md, "recipes".
SHARED_PARAMETERS = r"^(adapters|encoder)/"
# Packed token-task batches give each sentence this many tokens of row on average: 2.2x the
# Turkish treebank's mean (28.7 with an XLM-R tokenizer), so at length 128 a batch of 32 fits
# 16 rows in every batch of an epoch; masked-LM lines of the gettext text (mean 14.8-17.6
# tokens) fill 32 sentences into 16 rows in 98.6-100% of batches
# (python -m hyperx_jax.benchmarks.packing_bench).
PACKING_ROOM = 64
MLM_TASK = {"kind": "mlm", "labels": [], "metric": "mlm_accuracy"}  # masked LM on raw text
PACKED_SENTENCES = 8  # data.packing where set_packing packs
RECIPES = {  # name -> (optim.per_task_state, hyperx.unit_projection)
    "paper": (None, False),
    "per_task": (SHARED_PARAMETERS, True),
}
DEFAULT_RECIPE = "per_task"


def parse_arg(arg: Optional[str], **spec: Any) -> ml_collections.ConfigDict:
  """Parses 'size=large,runlocal,k=8' into a ConfigDict typed after `spec`'s defaults.

  A bare name sets a boolean to True. Names not in `spec` are an error listing the known ones.
  """
  result = ml_collections.ConfigDict(dict(spec))
  for item in filter(None, (arg or "").split(",")):
    name, eq, value = item.partition("=")
    name = name.strip()
    if name not in spec:
      raise ValueError(f"config arg {name!r} in {arg!r} is unknown; known: {sorted(spec)}")
    default = spec[name]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(f"config arg {name!r} needs a value ({name}=...)")
      result[name] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config arg {name}={value!r}: expected true/false")
      result[name] = value.lower() in ("true", "1")
    elif default is None or isinstance(default, str):
      result[name] = value
    else:
      result[name] = type(default)(value)
  return result


def hub_source(dataset: str, config: Optional[str], split: str, data_dir: str = "") -> dict:
  """A split of a Hugging Face hub dataset (a key of schema.HUB_DATASETS) read from its parquet
  files at the pinned revision, or, with `data_dir`, from a local copy of the repository in
  `<data_dir>/<owner>/<name>` (e.g. made by `huggingface-cli download --local-dir`)."""
  repo, revision = HUB_DATASETS[dataset]
  source = {"type": "hf_parquet", "config": config, "split": split}
  if data_dir:
    return {**source, "path": f"{data_dir}/{repo}"}
  return {**source, "repo": repo, "revision": revision}


def panx_source(lang: str, split: str, data_dir: str = "") -> dict:
  """PAN-X NER (XTREME's WikiANN split) of a language: `google/xtreme`, config PAN-X.<lang>."""
  return hub_source("xtreme", f"PAN-X.{lang}", split, data_dir)


def udpos_source(lang: str, split: str, data_dir: str = "") -> dict:
  """XTREME's UD-POS treebank of a language: `google/xtreme`, config udpos.<Language>."""
  if lang not in XTREME_UDPOS_LANGUAGES:
    raise ValueError(
        f"XTREME has no UD-POS treebank for {lang!r}; it has {sorted(XTREME_UDPOS_LANGUAGES)}"
    )
  return hub_source("xtreme", f"udpos.{XTREME_UDPOS_LANGUAGES[lang]}", split, data_dir)


NER_TASK = {"kind": "token_classification", "labels": list(NER_LABELS), "metric": "entity_f1"}
POS_TASK = {"kind": "token_classification", "labels": list(UPOS_TAGS), "metric": "pos"}
XNLI_TASK = {"kind": "pair_classification", "labels": list(XNLI_LABELS), "metric": "accuracy"}
# XTREME's token tasks trained on English: (task, its source, the test languages, best_metric).
XTREME_TOKEN_TASKS = {
    "ner": (
        NER_TASK,
        panx_source,
        ("en", "ar", "de", "es", "fr", "hi", "ja", "ru", "sw", "tr", "ur", "vi", "zh"),
        "ner:en/f1",
    ),
    "pos": (
        POS_TASK,
        udpos_source,
        ("en", "ar", "de", "es", "fr", "hi", "ja", "ru", "tr", "ur", "vi", "zh"),
        "pos:en/f1",
    ),
}


def stream(
    task: str,
    lang: str,
    source: dict[str, Any],
    max_examples: Optional[int] = None,
    role: Optional[str] = None,
    sample_seed: Optional[int] = None,
) -> dict[str, Any]:
  """One (task, language) data stream. Evaluation streams take a `role`: 'dev' (the default:
  evaluated during training, selects the checkpoint) or 'test' (evaluated once, at the end,
  on the selected checkpoint). `sample_seed`: `max_examples` drawn at random (few-shot)."""
  out = {"task": task, "lang": lang, "source": dict(source), "max_examples": max_examples}
  if sample_seed is not None:
    out["sample_seed"] = sample_seed
  return out if role is None else {**out, "role": role}


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a trained run saved (its config.json), to build a continuation on."""
  path = os.path.join(os.path.expanduser(workdir), "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"{path} not found: init_from must be a trained run's workdir")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def fewshot(
    workdir: str,
    task: str,
    lang: str,
    train: dict[str, Any],
    test: dict[str, Any],
    *,
    k: int,
    sample_seed: Optional[int],
    steps: int,
    vector: Optional[str] = None,
) -> ml_collections.ConfigDict:
  """Few-shot: the trained run in `workdir` continued on k examples of (task, lang) (drawn with
  `sample_seed`, or the first k) and tested on `test`. The model, tasks and recipe are the run's
  own; a language the run never had gets a new vector: `vector` ('typology', 'mean' or
  'random': `config.new_language_init`), by default its typology vector with a typology
  source, else a learned row started at the mean of the trained rows."""
  c = saved_config(workdir)
  if task not in c.tasks:
    raise ValueError(f"{workdir}: the run has no task {task!r}; its tasks: {sorted(c.tasks)}")
  c.init_from = os.path.abspath(os.path.expanduser(workdir))
  c.new_languages = [] if lang in c.languages else [lang]
  c.languages = list(c.languages) + c.new_languages
  typology = c.hyperx.language_source == "typology"
  c.new_language_init = vector or ("typology" if typology else "mean")
  c.hyperx.untrained_language = "row"  # the other languages train no more: their own rows
  c.train_streams = [stream(task, lang, train, max_examples=k, sample_seed=sample_seed)]
  c.eval_streams = [stream(task, lang, test, role=TEST)]
  c.data.weights = None
  c.total_steps = steps
  c.optim.warmup_steps = steps // 10
  c.eval_every_steps = c.checkpoint.every_steps = steps
  c.log_every_steps = max(1, steps // 10)
  c.checkpoint.best_metric = None  # no dev data in few-shot: the last step is reported
  c.checkpoint.keep = 1
  return c


def get_config() -> ml_collections.ConfigDict:
  """Every field at its default (tasks, languages and streams left empty)."""
  return ml_collections.ConfigDict(run_spec.defaults())


def experiment(
    arg: Optional[str], **extra: Any
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """Parses the common args (size, method, recipe, runlocal, data_dir, plus `extra`) and returns
  (arg, config) with the size's checkpoint and mesh, the method's rules and the recipe set.
  `data_dir`: local copies of the hub datasets (see `hub_source`); empty: the hub."""
  arg = parse_arg(
      arg,
      size="base",
      method="hyperx",
      recipe=DEFAULT_RECIPE,
      runlocal=False,
      data_dir="",
      **extra,
  )
  c = get_config()
  set_size(c, arg.size)
  set_method(c, arg.method)
  set_recipe(c, arg.recipe)
  return arg, c


def english_to_many(
    arg: Optional[str],
    task: str,
    spec: dict[str, Any],
    source: Any,
    eval_languages: Sequence[str],
    best_metric: str,
    total_steps: int = 20_000,
) -> ml_collections.ConfigDict:
  """One task trained on English, selected on English dev (validation) data and tested on
  `eval_languages` (zero-shot but English), as XTREME does; `source(lang, split, data_dir)`
  gives a stream's source."""
  arg, c = experiment(arg)
  c.optim.warmup_steps = 1000
  c.total_steps = total_steps
  c.tasks[task] = spec
  c.languages = list(eval_languages)
  c.train_streams = [stream(task, "en", source("en", "train", arg.data_dir))]
  c.eval_streams = [stream(task, "en", source("en", "validation", arg.data_dir), role=DEV)] + [
      stream(task, lang, source(lang, "test", arg.data_dir), role=TEST) for lang in eval_languages
  ]
  c.checkpoint.best_metric = best_metric
  if spec["kind"] == TOKEN:
    set_packing(c)
  if arg.runlocal:
    runlocal(c)
  return c


def set_packing(c: ml_collections.ConfigDict, room: int = PACKING_ROOM) -> None:
  """Packs training batches of short sentences: up to 8 a row, the batch's batch_size sentences
  in batch_size * room // max_length rows (off where that saves no row). Set it after the
  batch size and length, and again after changing them (`runlocal` does)."""
  rows = c.data.batch_size * room // c.data.max_length
  on = 1 <= rows < c.data.batch_size
  c.data.packing, c.data.packed_rows = (PACKED_SENTENCES, rows) if on else (PACKING_OFF, 0)


def set_method(c: ml_collections.ConfigDict, method: str) -> None:
  """Sets the method and the trainable / learning-rate rules that go with it."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
  c.method = method
  c.trainable = trainable_rules(method)
  c.optim.lr_multipliers = lr_multipliers(method)


def set_recipe(c: ml_collections.ConfigDict, recipe: str) -> None:
  """'paper' (one Adam state, raw projection) or 'per_task' (per-task Adam state on the shared
  parameters, unit projection): `RECIPES`."""
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; known: {list(RECIPES)}")
  c.optim.per_task_state, c.hyperx.unit_projection = RECIPES[recipe]


def set_size(c: ml_collections.ConfigDict, size: str) -> None:
  """XLM-R base / large / xl / xxl: checkpoint, preset and mesh."""
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r}; known: {list(SIZES)}")
  c.model.checkpoint, c.mesh.shape = SIZES[size]
  c.model.preset = size


def set_offline_sizes(c: ml_collections.ConfigDict) -> None:
  """The offline settings' adapter sizes on e5-small: bottleneck 64 and P 256 (a P below the
  3 x 64 source cost Hyper-X the seen pairs; docs/results/2026-12-07-seen-pair-cost.md)."""
  c.adapter.bottleneck = 64
  c.hyperx.projected_dim = 256


def set_paper_optim(c: ml_collections.ConfigDict) -> None:
  """The authors' run: AdamW 1e-4, 4k warm-up then linear decay, 100k steps, batch 32,
  max length 256, seed 123, b = 256, P = 192 (one learning rate for everything)."""
  c.seed = 123
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 4000
  c.optim.lr_multipliers = ()
  c.total_steps = 100_000
  c.data.batch_size = 32
  c.data.max_length = 256
  c.adapter.bottleneck = 256
  c.hyperx.projected_dim = 192


def runlocal(c: ml_collections.ConfigDict, total_steps: int = 20) -> None:
  """Shrinks a config to a quick smoke run on a workstation CPU."""
  c.total_steps = total_steps
  c.optim.warmup_steps = min(c.optim.warmup_steps, total_steps // 4)
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.data.max_length = 64
  if c.data.packing != PACKING_OFF:
    set_packing(c)  # for the smaller batch and length
  c.log_every_steps = 5
  c.eval_every_steps = total_steps
  c.checkpoint.every_steps = total_steps
  for s in list(c.train_streams) + list(c.eval_streams):
    s["max_examples"] = 64


def languages_of(streams: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> list[str]:
  """Every language in the streams (first appearance order), plus `extra`."""
  langs: list[str] = []
  for lang in [s["lang"] for s in streams] + list(extra):
    if lang not in langs:
      langs.append(lang)
  return langs
