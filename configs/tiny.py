"""A tiny run for tests and smoke checks: a small random XLM-R and small local files.

`workspace` holds `checkpoint/` (a Hugging Face XLM-R directory), `tokenizer/tokenizer.json` and
`data/` with, per language, `tag_<lang>_{train,test}.iob2`, `pair_<lang>_{train,test}.jsonl`
and `mlm_<lang>.txt` (tests/test_train.py writes them).

  python -m hyperx_jax.main --config=configs/tiny.py:workspace=/tmp/ws,tasks=tag+pair \
    --workdir=/tmp/run

`languages=de+tr+ja` names the workspace's three languages aa, bb, cc in the config (real ISO
codes, for `hyperx.language_source='typology'`); the files keep the workspace's names.
"""

import os

from hyperx_jax.config import common

TASKS = {
    "tag": {"kind": "token_classification", "labels": ["T0", "T1", "T2"], "metric": "pos"},
    "pair": {"kind": "pair_classification", "labels": ["same", "diff"], "metric": "accuracy"},
    "mlm": dict(common.MLM_TASK),
}
WORKSPACE_LANGUAGES = ("aa", "bb", "cc")
# (task, lang) pairs trained; the eval pairs add zero-shot ones (tag:bb, pair:cc).
TRAIN_PAIRS = (("tag", "aa"), ("pair", "aa"), ("pair", "bb"), ("mlm", "cc"))
EVAL_PAIRS = (("tag", "aa"), ("tag", "bb"), ("pair", "aa"), ("pair", "cc"))


def source(workspace: str, task: str, lang: str, split: str) -> dict:
  data = os.path.join(workspace, "data")
  if task == "tag":
    return {"type": "iob2", "path": os.path.join(data, f"tag_{lang}_{split}.iob2")}
  if task == "pair":
    return {"type": "jsonl", "path": os.path.join(data, f"pair_{lang}_{split}.jsonl")}
  return {"type": "text", "path": os.path.join(data, f"mlm_{lang}.txt")}


def get_config(arg=None):
  arg = common.parse_arg(
      arg,
      workspace="",
      tasks="tag+pair+mlm",
      method="hyperx",
      steps=20,
      batch=8,
      mesh="-1+1+1",
      languages="aa+bb+cc",
  )
  tasks = [t for t in arg.tasks.split("+") if t]
  unknown = [t for t in tasks if t not in TASKS]
  if unknown:
    raise ValueError(f"tiny config tasks={arg.tasks!r}: unknown {unknown}; known: {list(TASKS)}")
  names = dict(zip(WORKSPACE_LANGUAGES, arg.languages.split("+")))
  if len(names) != len(WORKSPACE_LANGUAGES) or len(set(names.values())) != len(names):
    raise ValueError(f"tiny config languages={arg.languages!r}: expected three distinct names")
  c = common.get_config()
  common.set_method(c, arg.method)
  ws = arg.workspace
  c.model.checkpoint = os.path.join(ws, "checkpoint")
  c.tokenizer = os.path.join(ws, "tokenizer")
  c.model.hidden_dropout = c.model.attention_dropout = c.model.classifier_dropout = 0.1
  c.adapter.bottleneck = 8
  c.hyperx.task_dim = c.hyperx.lang_dim = c.hyperx.layer_dim = 8
  c.hyperx.projected_dim = 16
  for name in tasks:
    c.tasks[name] = TASKS[name]
  c.train_streams = [
      common.stream(t, names[l], source(ws, t, l, "train")) for t, l in TRAIN_PAIRS if t in tasks
  ]
  c.eval_streams = [
      common.stream(t, names[l], source(ws, t, l, "test")) for t, l in EVAL_PAIRS if t in tasks
  ]
  c.languages = list(names.values())
  c.data.max_length = 16
  c.data.batch_size = arg.batch
  c.data.eval_batch_size = arg.batch
  c.optim.lr = 1e-2
  c.optim.warmup_steps = min(2, arg.steps - 1)
  c.total_steps = arg.steps
  c.mesh.shape = tuple(int(s) for s in arg.mesh.split("+"))
  c.log_every_steps = 5
  c.eval_every_steps = arg.steps
  c.checkpoint.every_steps = max(arg.steps // 2, 1)
  c.checkpoint.keep = 2
  return c
