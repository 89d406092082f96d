"""Few-shot: continue a trained run on k labelled examples of a language it has not seen.

The new language gets a fresh embedding (initialised by `new_language_init` from the trained
ones); the trainable state comes from `init_from` (another run's workdir).

  python -m hyperx_jax.main \
    --config=configs/fewshot.py:init_from=/runs/ner,task=ner,lang=sw,k=100 --workdir=DIR
"""

from hyperx_jax.config import common


def get_config(arg=None):
  arg = common.parse_arg(
      arg,
      init_from="",
      task="ner",
      lang="sw",
      k=100,
      steps=500,
      size="base",
      method="hyperx",
      runlocal=False,
      data_dir="",
  )
  if arg.task not in common.XTREME_TOKEN_TASKS:
    raise ValueError(
        f"fewshot task={arg.task!r} is unknown; known: " f"{sorted(common.XTREME_TOKEN_TASKS)}"
    )
  task, source, languages, best_metric = common.XTREME_TOKEN_TASKS[arg.task]
  c = common.english_to_many(
      f"size={arg.size},method={arg.method},data_dir={arg.data_dir}",
      arg.task,
      task,
      source,
      languages,
      best_metric,
  )
  c.init_from = arg.init_from or None
  if arg.lang not in c.languages:
    c.languages.append(arg.lang)
    c.new_languages = [arg.lang]
  c.train_streams = [
      common.stream(arg.task, arg.lang, source(arg.lang, "train", arg.data_dir), max_examples=arg.k)
  ]
  c.eval_streams = [
      common.stream(arg.task, arg.lang, source(arg.lang, "test", arg.data_dir), role="test")
  ]
  c.total_steps = arg.steps
  c.optim.warmup_steps = arg.steps // 10
  c.eval_every_steps = arg.steps
  c.checkpoint.every_steps = arg.steps
  c.checkpoint.best_metric = None
  if arg.runlocal:
    common.runlocal(c, total_steps=arg.steps)
  return c
