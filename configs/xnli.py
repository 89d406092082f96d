"""XNLI: train on English MultiNLI, evaluate zero-shot on the 15 XNLI languages.

The authors' hyper-parameters (AdamW 1e-4, 4k warm-up, linear decay, 100k steps, batch 32,
max length 256, seed 123, b = 256, P = 192) on XLM-R, with the `per_task` recipe (unit
projection; one task here, so one Adam state either way); `:recipe=paper` is the authors' own.

  python -m hyperx_jax.main --config=configs/xnli.py --workdir=DIR
  python -m hyperx_jax.main --config=configs/xnli.py:size=large,method=task_adapters --workdir=DIR
  python -m hyperx_jax.main --config=configs/xnli.py:runlocal --workdir=DIR

Data: MultiNLI (`nyu-mll/multi_nli`) and XNLI (`facebook/xnli`, one config per language) from
the Hugging Face hub at the revisions pinned in `hyperx_jax.config.vocabulary.HUB_DATASETS`, or from local copies with
`:data_dir=DIR` (see common.hub_source).
"""

from hyperx_jax.config import common


def get_config(arg=None):
  arg, c = common.experiment(arg)
  common.set_paper_optim(c)
  c.tasks.xnli = dict(common.XNLI_TASK)
  c.languages = list(common.XNLI_LANGUAGES)
  # XNLI ships no training split of its own: the English training data is MultiNLI.
  c.train_streams = [
      common.stream("xnli", "en", common.hub_source("multi_nli", None, "train", arg.data_dir))
  ]
  # Selected on English XNLI dev data; every language's test split reported once (XTREME).
  c.eval_streams = [
      common.stream(
          "xnli", "en", common.hub_source("xnli", "en", "validation", arg.data_dir), role="dev"
      )
  ]
  c.eval_streams += [
      common.stream(
          "xnli", lang, common.hub_source("xnli", lang, "test", arg.data_dir), role="test"
      )
      for lang in common.XNLI_LANGUAGES
  ]
  c.checkpoint.best_metric = "xnli:en/accuracy"
  if arg.runlocal:
    common.runlocal(c)
  return c
