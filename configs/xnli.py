"""XNLI: train on English MultiNLI, evaluate zero-shot on the 15 XNLI languages.

The authors' hyper-parameters (AdamW 1e-4, 4k warm-up, linear decay, 100k steps, batch 32,
max length 256, seed 123, b = 256, P = 192) on XLM-R.

  python -m hyperx_jax.main --config=configs/xnli.py --workdir=DIR
  python -m hyperx_jax.main --config=configs/xnli.py:size=large,method=task_adapters --workdir=DIR
  python -m hyperx_jax.main --config=configs/xnli.py:runlocal --workdir=DIR
"""

from configs import common


def tfds_source(name: str, split: str, lang: str | None = None) -> dict:
  return {'type': 'tfds', 'name': name, 'split': split, 'lang': lang}


def get_config(arg=None):
  arg, c = common.experiment(arg)
  common.set_paper_optim(c)
  c.tasks.xnli = {'kind': 'pair_classification', 'labels': list(common.XNLI_LABELS),
                  'metric': 'accuracy'}
  c.languages = list(common.XNLI_LANGUAGES)
  # XNLI ships no training split: the English training data is MultiNLI.
  c.train_streams = [common.stream('xnli', 'en', tfds_source('multi_nli', 'train'))]
  c.eval_streams = [common.stream('xnli', lang, tfds_source('xnli', 'test', lang))
                    for lang in common.XNLI_LANGUAGES]
  c.checkpoint.best_metric = 'xnli:en/accuracy'
  if arg.runlocal:
    common.runlocal(c)
  return c
