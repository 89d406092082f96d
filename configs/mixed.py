"""Mixed-language multi-task: en NER + en POS + tr POS + ar NER, MLM on tr and ar text;
tested on the pairs never trained: tr NER and ar POS (plus the trained ones).

  python -m hyperx_jax.main --config=configs/mixed.py --workdir=DIR
"""

from configs import common, ner, pos

MLM_LANGUAGES = ('tr', 'ar')


def mlm_text(lang: str) -> dict:
  """Raw text of the machine's gettext catalogues (swap for a `text` file of Wikipedia)."""
  return {'type': 'mo', 'lang': lang}


def get_config(arg=None):
  arg, c = common.experiment(arg)
  c.optim.warmup_steps = 1000
  c.total_steps = 50_000
  c.tasks.ner = ner.TASK
  c.tasks.pos = pos.TASK
  c.tasks.mlm = dict(common.MLM_TASK)
  d = arg.data_dir
  c.train_streams = [
      common.stream('ner', 'en', ner.panx('en', 'train', d)),
      common.stream('pos', 'en', pos.xtreme_pos('en', 'train', d)),
      common.stream('pos', 'tr', pos.xtreme_pos('tr', 'train', d)),
      common.stream('ner', 'ar', ner.panx('ar', 'train', d)),
  ] + [common.stream('mlm', lang, mlm_text(lang)) for lang in MLM_LANGUAGES]
  # Selected on English NER dev data (a seen pair: no zero-shot pair's data is used before
  # the test); the test splits are reported once.
  c.eval_streams = [common.stream('ner', 'en', ner.panx('en', 'validation', d), role='dev')] + [
      common.stream(task, lang, source(lang, 'test', d), role='test') for task, lang, source in (
          ('ner', 'tr', ner.panx),  # zero-shot pair
          ('pos', 'ar', pos.xtreme_pos),  # zero-shot pair
          ('ner', 'en', ner.panx),
          ('pos', 'tr', pos.xtreme_pos))]
  c.languages = common.languages_of(c.train_streams + c.eval_streams)
  c.checkpoint.best_metric = 'ner:en/f1'
  common.set_packing(c)  # short sentences and text lines only
  if arg.runlocal:
    common.runlocal(c)
  return c
