"""Mixed-language multi-task: en NER + en POS + tr POS + ar NER, MLM on tr and ar text;
tested on the pairs never trained: tr NER and ar POS (plus the trained ones).

The `per_task` recipe by default (one Adam state per task on the shared parameters, unit
projection): with masked-LM streams beside the tasks, the paper's one Adam state
(`:recipe=paper`) left the small-gradient tasks at chance in both offline settings
(docs/usage.md, "recipes").

  python -m hyperx_jax.main --config=configs/mixed.py --workdir=DIR
"""

from hyperx_jax.config import common

MLM_LANGUAGES = ("tr", "ar")


def mlm_text(lang: str) -> dict:
  """Raw text of the machine's gettext catalogues (swap for a `text` file of Wikipedia)."""
  return {"type": "mo", "lang": lang}


def get_config(arg=None):
  arg, c = common.experiment(arg)
  c.optim.warmup_steps = 1000
  c.total_steps = 50_000
  c.tasks.ner = common.NER_TASK
  c.tasks.pos = common.POS_TASK
  c.tasks.mlm = dict(common.MLM_TASK)
  d = arg.data_dir
  c.train_streams = [
      common.stream("ner", "en", common.panx_source("en", "train", d)),
      common.stream("pos", "en", common.udpos_source("en", "train", d)),
      common.stream("pos", "tr", common.udpos_source("tr", "train", d)),
      common.stream("ner", "ar", common.panx_source("ar", "train", d)),
  ] + [common.stream("mlm", lang, mlm_text(lang)) for lang in MLM_LANGUAGES]
  # Selected on English NER dev data (a seen pair: no zero-shot pair's data is used before
  # the test); the test splits are reported once.
  c.eval_streams = [
      common.stream("ner", "en", common.panx_source("en", "validation", d), role="dev")
  ] + [
      common.stream(task, lang, source(lang, "test", d), role="test")
      for task, lang, source in (
          ("ner", "tr", common.panx_source),  # zero-shot pair
          ("pos", "ar", common.udpos_source),  # zero-shot pair
          ("ner", "en", common.panx_source),
          ("pos", "tr", common.udpos_source),
      )
  ]
  c.languages = common.languages_of(c.train_streams + c.eval_streams)
  c.checkpoint.best_metric = "ner:en/f1"
  common.set_packing(c)  # short sentences and text lines only
  if arg.runlocal:
    common.runlocal(c)
  return c
