"""PAN-X NER (XTREME's WikiANN split): train on English, evaluate zero-shot on other languages.

Read from the Hugging Face hub (`google/xtreme`, configs `PAN-X.<lang>`, at the revision pinned
in schema.HUB_DATASETS), or from a local copy with `:data_dir=DIR` (see common.hub_source).

  python -m hyperx_jax.main --config=configs/ner.py --workdir=DIR
  python -m hyperx_jax.main --config=configs/ner.py:size=large,method=madx --workdir=DIR
"""

from configs import common

EVAL_LANGUAGES = ('en', 'ar', 'de', 'es', 'fr', 'hi', 'ja', 'ru', 'sw', 'tr', 'ur', 'vi', 'zh')
TASK = {'kind': 'token_classification', 'labels': list(common.NER_LABELS), 'metric': 'entity_f1'}


def panx(lang: str, split: str, data_dir: str = '') -> dict:
  return common.hub_source('xtreme', f'PAN-X.{lang}', split, data_dir)


def get_config(arg=None):
  return common.english_to_many(arg, 'ner', TASK, panx, EVAL_LANGUAGES, 'ner:en/f1')
