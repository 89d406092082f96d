"""Few-shot: continue a trained run on k labelled examples of a language, drawn with a seed.

The run in `init_from` (its workdir) gives the model, tasks and recipe; a language it never had
gets a new vector: `vector=typology` (its typology vector; the only one a typology-source run
has, and its default), `mean` (a learned row started at the mean of the trained rows; the
default of a learned-source run) or `random` (a fresh learned row); see `common.fewshot`. Only
the k examples train; the language's test split is evaluated once, at the last step (few-shot
has no dev data to select on).

  hyperx train --config=configs/fewshot.py:init_from=RUN,task=pairs,lang=ja,k=50,sample_seed=1 \\
      --workdir=DIR

`data=offline` (the default) reads the offline assets: the pair task in any gettext language
(`pairs/<lang>`), Turkish POS (the treebank), and the second setting's Estonian / Hebrew NER and
Hebrew / Portuguese POS (`hyperx assets prepare --settings=ner_pos`); `data=xtreme` reads PAN-X
and UD-POS from the hub (or `data_dir`). Over methods, k and sample seeds, `{method}` in
`init_from` names each method's own run:

  hyperx experiment --config='configs/fewshot.py:init_from=runs/demo/{method}/seed1,task=pairs,lang=ja' \\
      --methods=hyperx,task_adapters,madx --vary=k=10,50,100 --seeds=1,2,3 \\
      --seed_arg=sample_seed --workdir=runs/fewshot_ja
"""

import os

from hyperx_jax import assets
from hyperx_jax.config import common

DATA = ("offline", "xtreme")


def offline_source(task: str, lang: str, split: str) -> dict:
  """A split of the offline data of (task, lang); an error names what exists."""
  if task == "pairs":
    return {
        "type": "jsonl",
        "path": os.path.join(assets.asset_path("pairs"), lang, f"{split}.jsonl"),
    }
  if task == "pos" and lang == "tr":
    return {
        "type": "conllu",
        "path": os.path.join(assets.asset_path("tr_pos"), f"{split}.conllu"),
        "tag_map": "google_universal_to_upos",
    }
  ner_pos = assets.asset_path("ner_pos")
  if (task, lang) in (("pos", "he"), ("pos", "pt")):
    return {"type": "conllu", "path": os.path.join(ner_pos, f"{lang}_pos", f"{split}.conllu")}
  if (task, lang) in (("ner", "et"), ("ner", "he")):
    return {"type": "iob2", "path": os.path.join(ner_pos, f"{lang}_ner", f"{split}.iob2")}
  raise ValueError(
      f"configs/fewshot.py: no offline data for {task}:{lang}; there are pairs:<gettext "
      "language>, pos:tr, pos:he, pos:pt, ner:et, ner:he (or data=xtreme)"
  )


def xtreme_source(task: str, lang: str, split: str, data_dir: str) -> dict:
  if task not in common.XTREME_TOKEN_TASKS:
    raise ValueError(
        f"configs/fewshot.py: data=xtreme has tasks {sorted(common.XTREME_TOKEN_TASKS)}"
    )
  return common.XTREME_TOKEN_TASKS[task][1](
      lang, "validation" if split == "dev" else split, data_dir
  )


def get_config(arg=None):
  arg = common.parse_arg(
      arg,
      init_from="",
      task="",
      lang="",
      k=100,
      sample_seed=0,
      steps=200,
      method="",
      vector="",
      data="offline",
      data_dir="",
  )
  if not arg.init_from or not arg.task or not arg.lang:
    raise ValueError("configs/fewshot.py needs init_from=RUN_DIR, task=NAME and lang=CODE")
  if arg.data not in DATA:
    raise ValueError(f"configs/fewshot.py: data={arg.data!r}; expected one of {DATA}")
  init_from = arg.init_from.replace("{method}", arg.method or "{method}")
  if "{method}" in init_from:
    raise ValueError("configs/fewshot.py: init_from has {method}: give method=NAME too")
  if arg.data == "offline":
    train, test = (offline_source(arg.task, arg.lang, s) for s in ("train", "test"))
  else:
    train, test = (xtreme_source(arg.task, arg.lang, s, arg.data_dir) for s in ("train", "test"))
  c = common.fewshot(
      init_from,
      arg.task,
      arg.lang,
      train,
      test,
      k=arg.k,
      sample_seed=arg.sample_seed,
      steps=arg.steps,
      vector=arg.vector or None,
  )
  if arg.method and c.method != arg.method:
    raise ValueError(
        f"configs/fewshot.py: method={arg.method!r} but {init_from} trained {c.method!r}"
    )
  return c
