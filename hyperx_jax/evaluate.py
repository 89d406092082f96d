"""Evaluate a run's checkpoint on its eval pairs (all, or some), zero-shot pairs marked.

Used by the trainer (periodic and final evaluation) and on its own:

  python -m hyperx_jax.evaluate --workdir=DIR [--pairs=ner:tr,pos:ar] [--step=N]
                                [--allow_fallback] [--out=OUT | --replace_run_results]

evaluates a run's latest (or given) checkpoint (`run.restore`) and writes
`results.{json,md,csv,png}` (with their provenance: step, config hash, code version) to its own
directory, `DIR/eval/step_<N>/` (with --pairs `DIR/eval/step_<N>_<task>-<lang>_.../`), or to
--out (not DIR itself). The run's own `DIR/results.*` change only with --replace_run_results
(all pairs). When
the step is unreadable it stops with an error naming it; --allow_fallback takes the latest
readable earlier step instead (and warns).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from hyperx_jax import aot, cli, distributed, faults, language_swap, metrics, report, run, sharding
from hyperx_jax import tokenizer as tokenizers
from hyperx_jax import writers
from hyperx_jax.config import RunSpec
from hyperx_jax.config.sections import TaskSpec
from hyperx_jax.config.vocabulary import (
    DEV,
    EVAL_ROLES,
    MLM,
    TEST,
    Pair,
    max_mlm_predictions,
    pair_key,
)
from hyperx_jax.data import pipeline
from hyperx_jax.errors import UserError
from hyperx_jax.models import losses

Request = tuple[Pair, str]  # ((task, lang), the language whose vector the adapters read)


def parse_pairs(text: Optional[str], spec: RunSpec) -> Optional[list[Request]]:
  """'ner:tr,pairs:tr@de' -> [(('ner', 'tr'), 'tr'), (('pairs', 'tr'), 'de')]: eval pairs of
  the run, each scored with its own language vector or, after '@', another language's."""
  if not text:
    return None
  known = [s.pair for s in spec.eval_streams]
  requests = []
  for item in text.split(","):
    task, lang, vector = language_swap.split_swapped(item.strip())
    if (task, lang) not in known:
      raise UserError(
          f"--pairs: {item!r} is not an eval pair of the run; known: "
          f"{[pair_key(*p) for p in known]}"
      )
    if vector not in spec.languages:
      raise UserError(
          f"--pairs: {item!r}: {vector!r} is not a language of the run {list(spec.languages)}"
      )
    requests.append(((task, lang), vector))
  return requests


def with_language(batches: Iterable[Mapping[str, Any]], lang_id: int) -> Iterator[dict]:
  """The batches with every row's language id replaced: the adapters read that vector."""
  for local in batches:
    yield {**local, "lang_id": np.full_like(np.asarray(local["lang_id"]), lang_id)}


def make_eval_step(graphdef: Any, mesh: Mesh, trainable_sh: Any, frozen_sh: Any):
  """Jitted (trainable, frozen, batch, task) -> (predictions, labels they score against),
  compiled once per task (`aot.AheadOfTime`).

  Predictions: pair [B]; token [B, S]; mlm [B, K] with the labels at the same K positions.
  """
  batch_sh = sharding.batch_sharding(mesh)

  def eval_step(trainable, frozen, batch, task: str):
    model = nnx.merge(graphdef, trainable, frozen)
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # for splash's shard_map
      predictions = losses.predict(model, batch, task)
    labels = batch["labels"]
    if model.task_kind(task) == MLM:
      _, labels, _ = losses.select_mlm_positions(labels, max_mlm_predictions(labels.shape[1]))
    return predictions, labels

  return aot.AheadOfTime(
      jax.jit(
          eval_step,
          static_argnums=(3,),
          in_shardings=(trainable_sh, frozen_sh, batch_sh),
          out_shardings=(batch_sh, batch_sh),
      ),
      "eval step (task {})",
      static_argnum=3,
  )


def to_host(x: jax.Array) -> np.ndarray:
  """A global (batch-sharded) array in full on every host."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def evaluate_pair(
    eval_step,
    trainable: Any,
    frozen: Any,
    batches: Iterable[Mapping[str, Any]],
    task: TaskSpec,
    mesh: Mesh,
    description: str = "",
) -> dict[str, Any]:
  """Metrics of one (task, language) pair over all its eval batches (per-host numpy), and the
  number of examples they count (`examples`)."""
  acc = metrics.MetricAccumulator(task.kind, task.metric, list(task.labels) or None)
  for local in writers.progress_bar(batches, f"eval {description or task.name}"):
    batch = pipeline.make_global_batch(local, sharding.batch_sharding(mesh))
    predictions, labels = eval_step(trainable, frozen, batch, task.name)
    acc.add(to_host(predictions), to_host(labels), to_host(batch["example_mask"]))
  if not acc.num_examples:
    raise ValueError(f"eval pair {task.name}: no examples")
  return {**acc.result(), report.EXAMPLES: acc.num_examples}


def evaluate_all(
    eval_step,
    trainable: Any,
    frozen: Any,
    datasets: Mapping[Pair, Iterable[Mapping[str, Any]]],
    spec: RunSpec,
    mesh: Mesh,
    pairs: Optional[Sequence[Request]] = None,
) -> dict[str, dict[str, Any]]:
  """{'task:lang': {metric: value, ..., 'zero_shot': bool, 'examples': int}} for every eval
  pair of `datasets`, or the requested ones (`parse_pairs`; a pair scored with another
  language's vector is 'task:lang@vector')."""
  zero_shot = spec.zero_shot_pairs()
  mlm_only = spec.mlm_only_languages()
  requests = pairs if pairs is not None else [(p, p[1]) for p in datasets]
  results = {}
  for (task, lang), vector in requests:
    if (task, lang) not in datasets:
      continue  # a pair of the other role
    key = language_swap.swapped_key(pair_key(task, lang), vector)
    faults.inject("eval", key)  # test-only (faults.py)
    batches = datasets[(task, lang)]
    if vector != lang:
      batches = with_language(batches, spec.languages.index(vector))
    result = evaluate_pair(eval_step, trainable, frozen, batches, spec.tasks[task], mesh, key)
    result[report.ZERO_SHOT] = (task, lang) in zero_shot
    results[key] = result
    note = (
        (" (zero-shot" + (", language seen only through MLM" if lang in mlm_only else "") + ")")
        if result[report.ZERO_SHOT]
        else ""
    )
    logging.info(
        "eval %s%s, %d examples: %s",
        key,
        note,
        result[report.EXAMPLES],
        {k: round(v, 4) for k, v in result.items() if isinstance(v, float)},
    )
  return results


def datasets_by_role(
    spec: RunSpec, tokenizer, examples: Optional[Sequence[Sequence[Any]]] = None
) -> dict[str, pipeline.EvalDatasets]:
  """{'dev': ..., 'test': ...}: each role's eval datasets (`examples`: one list per eval
  stream, when already read)."""
  return {
      role: pipeline.build_eval_datasets(
          spec.eval_streams, spec.train_streams, spec.data, spec.seed, tokenizer, examples, role
      )
      for role in EVAL_ROLES
  }


class Evaluation(NamedTuple):
  """One checkpoint on every eval pair. `table` is what the run reports: its test pairs, or its
  dev pairs when it has no test streams; `dev` the dev pairs' results."""

  table: dict[str, dict[str, Any]]
  dev: dict[str, dict[str, Any]]


def evaluate_roles(
    eval_step,
    trainable: Any,
    frozen: Any,
    datasets: Mapping[str, pipeline.EvalDatasets],
    spec: RunSpec,
    mesh: Mesh,
    pairs: Optional[Sequence[Request]] = None,
) -> Evaluation:
  """Dev and test pairs of one checkpoint (test pairs are only ever evaluated here, once)."""
  dev = evaluate_all(eval_step, trainable, frozen, datasets[DEV], spec, mesh, pairs)
  if not spec.test_streams:
    return Evaluation(dev, dev)
  test = evaluate_all(eval_step, trainable, frozen, datasets[TEST], spec, mesh, pairs)
  return Evaluation(test, dev)


def selection(step: int, evaluation: Evaluation, by: Optional[str] = None) -> dict[str, Any]:
  """What chose the evaluated checkpoint, for the results' provenance: its step, `by` (the dev
  metric that selected it, `checkpoint.best_metric`; None for the final step or a step asked
  for) and that metric's value, and the dev results when they are not the table itself."""
  record = {
      "step": int(step),
      "by": by,
      "value": flat_scalars(evaluation.dev).get(by) if by else None,
  }
  if evaluation.dev is not evaluation.table:
    record["dev"] = evaluation.dev
  return record


def flat_scalars(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
  """{'ner:tr': {'f1': x}} -> {'ner:tr/f1': x} (the names `checkpoint.best_metric` uses)."""
  return {
      f"{key}/{name}": float(v)
      for key, r in results.items()
      for name, v in r.items()
      if name not in report.ENTRY_FIELDS
  }


class Checkpoint(NamedTuple):
  """A trained run restored at a step, with its eval step and eval datasets."""

  trained: run.TrainedRun
  eval_step: Any
  datasets: dict[str, pipeline.EvalDatasets]

  def evaluate(self, pairs: Optional[Sequence[Request]] = None) -> Evaluation:
    parts = self.trained.parts
    return evaluate_roles(
        self.eval_step,
        parts.trainable,
        parts.frozen,
        self.datasets,
        self.trained.spec,
        self.trained.mesh,
        pairs,
    )

  def language_swap(self) -> language_swap.Table:
    """Every zero-shot pair's main metric (%) with its own language vector and with each
    trained language's (a language with any training stream)."""
    spec, parts = self.trained.spec, self.trained.parts
    trained = {s.lang for s in spec.train_streams}
    vectors = [lang for lang in spec.languages if lang in trained]
    table = {}
    for role in (TEST, DEV):
      for task, lang in self.datasets[role]:
        key = pair_key(task, lang)
        if (task, lang) not in spec.zero_shot_pairs() or key in table:
          continue
        requests = [((task, lang), v) for v in [lang] + [v for v in vectors if v != lang]]
        results = evaluate_all(
            self.eval_step,
            parts.trainable,
            parts.frozen,
            self.datasets[role],
            spec,
            self.trained.mesh,
            requests,
        )
        metric = report.main_metric(list(results.values()))
        table[key] = {
            language_swap.split_swapped(k)[2]: 100 * float(r[metric]) for k, r in results.items()
        }
    return table


def restore_checkpoint(
    workdir: str, *, step: Union[str, int] = "best", allow_fallback: bool = False
) -> Checkpoint:
  """A run at `step` ('best', 'latest' or a number: `run.restore`; an unreadable step is an
  error unless `allow_fallback`) with what evaluating it needs."""
  trained = run.restore(workdir, step=step, allow_fallback=allow_fallback)
  spec, parts = trained.spec, trained.parts
  tokenizer = tokenizers.load_tokenizer(spec.tokenizer_path)
  logging.info("evaluating %s at step %d (%s)", workdir, trained.step, trained.step_reason)
  eval_step = make_eval_step(
      parts.graphdef,
      trained.mesh,
      run.shardings_of(parts.trainable),
      run.shardings_of(parts.frozen),
  )
  return Checkpoint(trained, eval_step, datasets_by_role(spec, tokenizer))


def evaluate_checkpoint(
    workdir: str,
    *,
    pairs_text: Optional[str] = None,
    step: Union[str, int] = "best",
    allow_fallback: bool = False,
) -> tuple[run.TrainedRun, Evaluation]:
  """A run's checkpoint (the reported one by default) on its eval pairs (all, or
  'ner:tr,pairs:tr@de'), and the run restored at that step."""
  checkpoint = restore_checkpoint(workdir, step=step, allow_fallback=allow_fallback)
  pairs = parse_pairs(pairs_text, checkpoint.trained.spec)
  return checkpoint.trained, checkpoint.evaluate(pairs)


def output_dir(workdir: str, step: int, pairs_text: Optional[str] = None) -> str:
  """`workdir/eval/step_<step>`, with `_<task>-<lang>_...` for a subset of pairs."""
  name = f"step_{step}"
  if pairs_text:
    name += "_" + "_".join(p.strip().replace(":", "-") for p in pairs_text.split(","))
  return os.path.join(workdir, "eval", name)


def same_directory(a: str, b: str) -> bool:
  if "://" in a or "://" in b:
    return a.rstrip("/") == b.rstrip("/")
  return os.path.realpath(a) == os.path.realpath(b)


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.replace_run_results and (FLAGS.pairs or FLAGS.out):
    raise app.UsageError(
        "--replace_run_results writes every pair to --workdir: it takes "
        "neither --pairs nor --out"
    )
  if FLAGS.out and same_directory(FLAGS.out, FLAGS.workdir) and not FLAGS.language_swap:
    raise app.UsageError(
        f"--out={FLAGS.out} is the run directory: pass --replace_run_results "
        "to replace the run's results.*"
    )
  if FLAGS.language_swap and (FLAGS.pairs or FLAGS.replace_run_results):
    raise app.UsageError(
        "--language_swap scores every zero-shot pair: no --pairs, and it "
        "writes language_swap.* beside, never the run's results"
    )
  distributed.initialize()  # every host of a pod evaluates its slice; a no-op on one machine
  checkpoint = restore_checkpoint(
      FLAGS.workdir, step=FLAGS.step, allow_fallback=FLAGS.allow_fallback
  )
  trained = checkpoint.trained
  if FLAGS.language_swap:
    out = FLAGS.out or output_dir(FLAGS.workdir, trained.step)
    table = checkpoint.language_swap()
    if jax.process_index() == 0:
      os.makedirs(out, exist_ok=True)
      language_swap.write(out, table)
      print(language_swap.markdown(table), end="")
    print(f"language swap of step {trained.step} ({trained.step_reason}) -> {out}")
    return
  evaluation = checkpoint.evaluate(parse_pairs(FLAGS.pairs, trained.spec))
  out = FLAGS.out or output_dir(FLAGS.workdir, trained.step, FLAGS.pairs)
  if FLAGS.replace_run_results:
    out = FLAGS.workdir
  reported, chosen = run.reported_step(FLAGS.workdir)
  by = chosen.get("by") if reported == trained.step else None
  run.write_results(
      trained.config,
      trained.spec,
      out,
      evaluation.table,
      trained.step,
      selection(trained.step, evaluation, by),
  )
  print(f"evaluated step {trained.step} ({trained.step_reason}) -> {out}")


def define_flags() -> None:
  flags.DEFINE_string(
      "workdir", None, "A training run directory (holds config.json).", required=True
  )
  flags.DEFINE_string(
      "pairs",
      None,
      "Comma-separated task:lang pairs (default: all); task:lang@other scores the pair with "
      "another language's vector (e.g. pairs:tr@de).",
  )
  flags.DEFINE_bool(
      "language_swap",
      False,
      "Score every zero-shot pair with its own language vector and with each trained "
      "language's; writes language_swap.{json,md} (hyperx_jax/language_swap.py).",
  )
  cli.define_step_flag()
  flags.DEFINE_bool(
      "allow_fallback",
      False,
      "If the step is unreadable, evaluate the latest "
      "readable earlier one (default: stop with an error).",
  )
  flags.DEFINE_string(
      "out", None, "Directory for results.* (default: WORKDIR/eval/step_<N>[_<pairs>])."
  )
  flags.DEFINE_bool(
      "replace_run_results",
      False,
      "Write to WORKDIR's own results.* instead, "
      "replacing the table the run wrote (all pairs only).",
  )


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
