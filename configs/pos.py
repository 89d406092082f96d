"""UD POS (XTREME's UD-POS treebanks): train on English, evaluate zero-shot on others.

  python -m hyperx_jax.main --config=configs/pos.py --workdir=DIR
"""

from configs import common

EVAL_LANGUAGES = ('en', 'ar', 'de', 'es', 'fr', 'hi', 'ja', 'ru', 'tr', 'ur', 'vi', 'zh')


def xtreme_pos(lang: str, split: str) -> dict:
  return {'type': 'tfds', 'name': f'xtreme_pos/xtreme_pos_{lang}', 'split': split}


def get_config(arg=None):
  arg = common.parse_arg(arg, size='base', method='hyperx', runlocal=False)
  c = common.get_config()
  common.set_size(c, arg.size)
  common.set_method(c, arg.method)
  c.optim.warmup_steps = 1000
  c.total_steps = 20_000
  c.tasks.pos = {'kind': 'token_classification', 'labels': list(common.UPOS_TAGS),
                 'metric': 'pos'}
  c.languages = list(EVAL_LANGUAGES)
  c.train_streams = [common.stream('pos', 'en', xtreme_pos('en', 'train'))]
  c.eval_streams = [common.stream('pos', lang, xtreme_pos(lang, 'test'))
                    for lang in EVAL_LANGUAGES]
  c.checkpoint.best_metric = 'pos:en/f1'
  if arg.runlocal:
    common.runlocal(c)
  return c
