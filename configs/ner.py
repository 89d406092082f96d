"""WikiANN NER: train on English, evaluate zero-shot on the XTREME PAN-X languages.

  python -m hyperx_jax.main --config=configs/ner.py --workdir=DIR
  python -m hyperx_jax.main --config=configs/ner.py:size=large,method=madx --workdir=DIR
"""

from configs import common

EVAL_LANGUAGES = ('en', 'ar', 'de', 'es', 'fr', 'hi', 'ja', 'ru', 'sw', 'tr', 'ur', 'vi', 'zh')
TASK = {'kind': 'token_classification', 'labels': list(common.NER_LABELS), 'metric': 'entity_f1'}


def wikiann(lang: str, split: str) -> dict:
  return {'type': 'tfds', 'name': f'wikiann/{lang}', 'split': split}


def get_config(arg=None):
  return common.english_to_many(arg, 'ner', TASK, wikiann, EVAL_LANGUAGES, 'ner:en/f1')
