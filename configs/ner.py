"""WikiANN NER: train on English, evaluate zero-shot on the XTREME PAN-X languages.

  python -m hyperx_jax.main --config=configs/ner.py --workdir=DIR
  python -m hyperx_jax.main --config=configs/ner.py:size=large,method=madx --workdir=DIR
"""

from configs import common

EVAL_LANGUAGES = ('en', 'ar', 'de', 'es', 'fr', 'hi', 'ja', 'ru', 'sw', 'tr', 'ur', 'vi', 'zh')


def wikiann(lang: str, split: str) -> dict:
  return {'type': 'tfds', 'name': f'wikiann/{lang}', 'split': split}


def get_config(arg=None):
  arg = common.parse_arg(arg, size='base', method='hyperx', runlocal=False)
  c = common.get_config()
  common.set_size(c, arg.size)
  common.set_method(c, arg.method)
  c.optim.warmup_steps = 1000
  c.total_steps = 20_000
  c.tasks.ner = {'kind': 'token_classification', 'labels': list(common.NER_LABELS),
                 'metric': 'entity_f1'}
  c.languages = list(EVAL_LANGUAGES)
  c.train_streams = [common.stream('ner', 'en', wikiann('en', 'train'))]
  c.eval_streams = [common.stream('ner', lang, wikiann(lang, 'test')) for lang in EVAL_LANGUAGES]
  c.checkpoint.best_metric = 'ner:en/entity_f1'
  if arg.runlocal:
    common.runlocal(c)
  return c
