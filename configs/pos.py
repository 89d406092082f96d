"""UD POS (XTREME's UD-POS treebanks): train on English, evaluate zero-shot on others.

  python -m hyperx_jax.main --config=configs/pos.py --workdir=DIR
"""

from configs import common

EVAL_LANGUAGES = ('en', 'ar', 'de', 'es', 'fr', 'hi', 'ja', 'ru', 'tr', 'ur', 'vi', 'zh')
TASK = {'kind': 'token_classification', 'labels': list(common.UPOS_TAGS), 'metric': 'pos'}


def xtreme_pos(lang: str, split: str) -> dict:
  return {'type': 'tfds', 'name': f'xtreme_pos/xtreme_pos_{lang}', 'split': split}


def get_config(arg=None):
  return common.english_to_many(arg, 'pos', TASK, xtreme_pos, EVAL_LANGUAGES, 'pos:en/f1')
