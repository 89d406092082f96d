"""UD POS (XTREME's UD-POS treebanks): train on English, evaluate zero-shot on others.

Read from the Hugging Face hub (`google/xtreme`, configs `udpos.<Language>`, at the revision
pinned in `hyperx_jax.config.vocabulary.HUB_DATASETS`), or from a local copy with
`:data_dir=DIR` (see `common.hub_source`).

  python -m hyperx_jax.main --config=configs/pos.py --workdir=DIR
"""

from hyperx_jax.config import common


def get_config(arg=None):
  return common.english_to_many(arg, "pos", *common.XTREME_TOKEN_TASKS["pos"])
