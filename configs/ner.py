"""PAN-X NER (XTREME's WikiANN split): train on English, evaluate zero-shot on other languages.

Read from the Hugging Face hub (`google/xtreme`, configs `PAN-X.<lang>`, at the revision pinned
in `hyperx_jax.config.vocabulary.HUB_DATASETS`), or from a local copy with `:data_dir=DIR`
(see `common.hub_source`).

  python -m hyperx_jax.main --config=configs/ner.py --workdir=DIR
  python -m hyperx_jax.main --config=configs/ner.py:size=large,method=madx --workdir=DIR
"""

from hyperx_jax.config import common


def get_config(arg=None):
  return common.english_to_many(arg, "ner", *common.XTREME_TOKEN_TASKS["ner"])
