"""UD POS (XTREME's UD-POS treebanks): train on English, evaluate zero-shot on others.

Read from the Hugging Face hub (`google/xtreme`, configs `udpos.<Language>`, at the revision
pinned in schema.HUB_DATASETS), or from a local copy with `:data_dir=DIR` (see
common.hub_source).

  python -m hyperx_jax.main --config=configs/pos.py --workdir=DIR
"""

from configs import common
from hyperx_jax.schema import XTREME_UDPOS_LANGUAGES

EVAL_LANGUAGES = ('en', 'ar', 'de', 'es', 'fr', 'hi', 'ja', 'ru', 'tr', 'ur', 'vi', 'zh')
TASK = {'kind': 'token_classification', 'labels': list(common.UPOS_TAGS), 'metric': 'pos'}


def xtreme_pos(lang: str, split: str, data_dir: str = '') -> dict:
  if lang not in XTREME_UDPOS_LANGUAGES:
    raise ValueError(f'XTREME has no UD-POS treebank for {lang!r}; it has '
                     f'{sorted(XTREME_UDPOS_LANGUAGES)}')
  return common.hub_source('xtreme', f'udpos.{XTREME_UDPOS_LANGUAGES[lang]}', split, data_dir)


def get_config(arg=None):
  return common.english_to_many(arg, 'pos', TASK, xtreme_pos, EVAL_LANGUAGES, 'pos:en/f1')
