"""Evaluation on every configured (task, language) pair, zero-shot pairs marked.

Used by the trainer (periodic and final evaluation) and on its own:

  python -m hyperx_jax.evaluate --workdir=DIR [--pairs=ner:tr,pos:ar] [--step=N]

evaluates a run's latest (or given) checkpoint with the config the run saved
(`DIR/config.json`) and writes `DIR/results.{json,md,csv,png}` (with --pairs into
`DIR/eval_<task>-<lang>_.../`, so a partial evaluation does not replace the run's table).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from hyperx_jax import metrics, sharding
from hyperx_jax.data import pipeline
from hyperx_jax.models import model as model_lib

Pair = tuple[str, str]  # (task, language)


def pair_key(task: str, lang: str) -> str:
  return f'{task}:{lang}'


def parse_pairs(text: Optional[str], config: Any) -> Optional[list[Pair]]:
  """'ner:tr,pos:ar' -> [('ner', 'tr'), ('pos', 'ar')], each an eval pair of the config."""
  if not text:
    return None
  known = [(s['task'], s['lang']) for s in config.eval_streams]
  pairs = []
  for item in text.split(','):
    task, _, lang = item.strip().partition(':')
    if (task, lang) not in known:
      raise ValueError(f'--pairs: {item!r} is not an eval pair of the run; known: '
                       f'{[pair_key(*p) for p in known]}')
    pairs.append((task, lang))
  return pairs


def zero_shot_pairs(config: Any) -> set[Pair]:
  """Eval pairs with no training stream of their own (zero-shot transfer)."""
  trained = {(s['task'], s['lang']) for s in config.train_streams}
  return {(s['task'], s['lang']) for s in config.eval_streams} - trained


def mlm_only_languages(config: Any) -> set[str]:
  """Languages whose only training data is masked-LM text."""
  kinds = {}
  for s in config.train_streams:
    kinds.setdefault(s['lang'], set()).add(config.tasks[s['task']].kind)
  return {lang for lang, k in kinds.items() if k == {'mlm'}}


def make_eval_step(graphdef: Any, mesh: Mesh, trainable_sh: Any, frozen_sh: Any):
  """Jitted (trainable, frozen, batch, task) -> (predictions, labels they score against).

  Predictions: pair [B]; token [B, S]; mlm [B, K] with the labels at the same K positions.
  """
  batch_sh = sharding.batch_sharding(mesh)

  def eval_step(trainable, frozen, batch, task: str):
    model = nnx.merge(graphdef, trainable, frozen)
    predictions = model_lib.predict(model, batch, task)
    labels = batch['labels']
    if model.tasks[task].kind == 'mlm':
      k = model_lib.mlm_num_predictions(labels.shape[1])
      _, labels, _ = model_lib.select_mlm_positions(labels, k)
    return predictions, labels

  return jax.jit(eval_step, static_argnums=(3,),
                 in_shardings=(trainable_sh, frozen_sh, batch_sh),
                 out_shardings=(batch_sh, batch_sh))


def to_host(x: jax.Array) -> np.ndarray:
  """A global (batch-sharded) array in full on every host."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def accumulator(config: Any, task: str) -> metrics.MetricAccumulator:
  spec = config.tasks[task]
  labels = list(spec.get('labels') or []) or None
  return metrics.MetricAccumulator(spec.kind, spec.metric, labels)


def evaluate_pair(eval_step, trainable: Any, frozen: Any, batches: Iterable[Mapping[str, Any]],
                  config: Any, task: str, mesh: Mesh) -> dict[str, float]:
  """Metrics of one (task, language) pair over all its eval batches (per-host numpy)."""
  acc = accumulator(config, task)
  for local in batches:
    batch = pipeline.make_global_batch(local, sharding.batch_sharding(mesh))
    predictions, labels = eval_step(trainable, frozen, batch, task)
    acc.add(to_host(predictions), to_host(labels), to_host(batch['example_mask']))
  if not acc.num_examples:
    raise ValueError(f'eval pair {task}: no examples')
  return acc.result()


def evaluate_all(eval_step, trainable: Any, frozen: Any,
                 datasets: Mapping[Pair, Iterable[Mapping[str, Any]]], config: Any, mesh: Mesh,
                 pairs: Optional[Sequence[Pair]] = None) -> dict[str, dict[str, Any]]:
  """{'task:lang': {metric: value, ..., 'zero_shot': bool}} for every (selected) eval pair."""
  zero_shot = zero_shot_pairs(config)
  mlm_only = mlm_only_languages(config)
  results = {}
  for (task, lang), batches in datasets.items():
    if pairs is not None and (task, lang) not in pairs:
      continue
    result = evaluate_pair(eval_step, trainable, frozen, batches, config, task, mesh)
    result['zero_shot'] = (task, lang) in zero_shot
    results[pair_key(task, lang)] = result
    note = (' (zero-shot' + (', language seen only through MLM' if lang in mlm_only else '')
            + ')') if result['zero_shot'] else ''
    logging.info('eval %s%s: %s', pair_key(task, lang), note,
                 {k: round(v, 4) for k, v in result.items() if isinstance(v, float)})
  return results


def flat_scalars(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
  """{'ner:tr': {'f1': x}} -> {'ner:tr/f1': x} (the names `checkpoint.best_metric` uses)."""
  return {f'{key}/{name}': float(v) for key, r in results.items() for name, v in r.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def main(argv: Sequence[str]) -> None:
  del argv
  from hyperx_jax import distributed, train  # pylint: disable=g-import-not-at-top  (train imports this module)
  distributed.initialize()  # every host of a pod evaluates its slice; a no-op on one machine
  workdir = FLAGS.workdir
  config = train.load_run_config(workdir)
  pairs = parse_pairs(FLAGS.pairs, config)
  results = train.evaluate_checkpoint(config, workdir, pairs=pairs, step=FLAGS.step)
  # A partial evaluation goes to its own directory, next to the run's final table.
  out = os.path.join(workdir, 'eval_' + '_'.join(f'{t}-{l}' for t, l in pairs)) if pairs \
      else workdir
  train.write_report(config, out, results)


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A training run directory (holds config.json).',
                      required=True)
  flags.DEFINE_string('pairs', None, 'Comma-separated task:lang pairs (default: all).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  FLAGS = flags.FLAGS
  app.run(main)
