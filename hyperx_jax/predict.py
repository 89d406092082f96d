"""Label a file with a trained run, for any (task, language) the run knows.

    python -m hyperx_jax.predict --workdir=RUN --task=pos --lang=tr --input=test.conllu \\
        --out=predicted.conllu [--format=conllu|iob2|text|jsonl] [--step=N] [--batch_size=N]

Zero-shot pairs work like trained ones: Hyper-X generates the adapters of any task and language
of the run from their embeddings (the static baselines use their task's adapter). The format
follows the file's extension (.conllu, .iob2/.conll/.tsv, .txt, .jsonl) unless --format says:

  conllu  token tasks. Out: the same file with each word line's UPOS column (4th) replaced by the
          prediction; comments, multi-word ranges and empty nodes are kept as they are.
  iob2    token tasks. One word per line (a second column, e.g. gold tags, may be present), a
          blank line between sentences. Out: `word<TAB>predicted tag`, blank lines kept.
  text    token tasks. One sentence per line, words split on whitespace. Out: one line per
          input line, `word/TAG word/TAG ...`.
  jsonl   pair tasks. One object per line with "premise" and "hypothesis" (or the MultiNLI/XNLI
          names "sentence1" and "sentence2"). Out: the same objects plus "prediction" (a label).

Everything is checked before the model is built: the task and language (the valid ones are
listed), the format against the task's kind, every input line (file:line), and that --out is not
the input. Words whose sub-words fall past `data.max_length` (the run's, or --max_length) get the
tag `_` and are counted in the summary. The output is written whole or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any, Optional, Sequence, Union

import numpy as np
from absl import app, flags
from tqdm import tqdm

from hyperx_jax import cli, evaluate, fileio, run, sharding
from hyperx_jax import tokenizer as tokenizers
from hyperx_jax.config import RunSpec, decode, environment
from hyperx_jax.config.sections import StreamSpec
from hyperx_jax.config.vocabulary import DATA_AXES, IGNORE_INDEX, MLM, PAIR, TOKEN, pair_key
from hyperx_jax.data import features, mixture, pipeline, sources
from hyperx_jax.errors import UserError

NO_PREDICTION = "_"


class PredictError(UserError):
  """A bad request (task, language, format, file); raised before the model is built."""


# ------------------------------------------------------------------------------ request


@dataclasses.dataclass
class Request:
  """A checked prediction request: the run's spec, the stream it predicts for, the input."""

  spec: RunSpec
  stream: StreamSpec  # (task, lang) with their ids and labels; no source
  document: sources.Document
  input_format: str


def _choose(what: str, value: str, known: Sequence[str]) -> str:
  if value not in known:
    raise PredictError(f"--{what}={value!r} is not in the run; known: {list(known)}")
  return value


def input_format(path: str, fmt: Optional[str], kind: str) -> str:
  """--format, else the one the file's extension names; it must suit the task kind."""
  allowed = [name for name, k in sources.DOCUMENT_FORMATS.items() if k == kind]
  if fmt is None:
    fmt = sources.FORMAT_OF_SUFFIX.get(os.path.splitext(path)[1].lower())
    if fmt is None:
      raise PredictError(
          f"{path}: cannot tell the format from the extension; pass --format, "
          f"one of {list(allowed)}"
      )
  if fmt not in allowed:
    raise PredictError(f"format {fmt!r} does not suit a {kind} task; use one of {list(allowed)}")
  return fmt


def check_request(
    workdir: str, task: str, lang: str, input_path: str, out_path: str, fmt: Optional[str] = None
) -> Request:
  """Reads the run's config and the input; every error here comes before any model work."""
  spec = decode(run.load_config(workdir))
  _choose("task", task, list(spec.tasks))
  _choose("lang", lang, spec.languages)
  kind = spec.tasks[task].kind
  if kind == MLM:
    raise PredictError(
        f"task {task!r} is masked LM; predict labels classification tasks: "
        f"{[t for t, s in spec.tasks.items() if s.kind != MLM]}"
    )
  if os.path.abspath(out_path) == os.path.abspath(input_path):
    raise PredictError(f"--out {out_path} is the input file; choose another path")
  fmt = input_format(input_path, fmt, kind)
  document = sources.FORMATS[fmt].read_document(input_path)
  stream = StreamSpec(
      task=task,
      lang=lang,
      kind=kind,
      labels=spec.tasks[task].labels,
      task_id=list(spec.tasks).index(task),
      lang_id=spec.languages.index(lang),
      source={"path": input_path},
  )
  return Request(spec, stream, document, fmt)


# ------------------------------------------------------------------------------ featurise


def featurize(
    request: Request, tokenizer, max_length: int
) -> tuple[list[Optional[dict]], list[Optional[list]]]:
  """Rows (None for an example the featuriser skips) and, for token tasks, per example the
  position of each word's label in its row (None: the word got no prediction)."""
  featurizer = features.make_featurizer(
      request.stream.kind, tokenizer, max_length, request.stream.labels
  )
  ids = pipeline.stream_ids(request.stream)
  rows, positions = [], []
  for example in request.document.examples:
    if request.stream.kind == TOKEN:
      input_ids, where = featurizer.word_positions(example["tokens"])
      no_labels = [IGNORE_INDEX] * len(input_ids)
      rows.append({**featurizer.pad(input_ids, no_labels), **ids})
      positions.append(where)
    else:
      row = featurizer({**example, "label": 0})
      rows.append(None if row is None else {**row, **ids})
      positions.append(None)
  return rows, positions


# -------------------------------------------------------------------------------- predict


def predict(
    request: Request, trained: run.TrainedRun, tokenizer, *, batch_size: int, max_length: int
) -> tuple[list[Any], dict[str, int]]:
  """Predictions for every example of the request's document, and counts."""
  labels = request.stream.labels
  rows, positions = featurize(request, tokenizer, max_length)
  real = [r for r in rows if r is not None]
  if not real:
    raise PredictError(f'{request.stream.source["path"]}: no example to predict')
  filler = pipeline.padding_row(real[0], tokenizer.pad_token_id)
  parts, mesh = trained.parts, trained.mesh
  eval_step = evaluate.make_eval_step(
      parts.graphdef, mesh, run.shardings_of(parts.trainable), run.shardings_of(parts.frozen)
  )
  batch_sharding = sharding.batch_sharding(mesh)
  predicted: list[np.ndarray] = []
  task = request.stream.task
  for start in tqdm(
      range(0, len(rows), batch_size),
      desc=pair_key(task, request.stream.lang),
      unit="batch",
      disable=None,
  ):
    chunk = [r if r is not None else filler for r in rows[start : start + batch_size]]
    chunk += [filler] * (batch_size - len(chunk))
    batch = pipeline.make_global_batch(mixture.stack_examples(chunk), batch_sharding)
    out, _ = eval_step(parts.trainable, parts.frozen, batch, task)
    predicted.extend(evaluate.to_host(out))
  counts = {"examples": len(rows), "skipped": len(rows) - len(real)}
  if request.stream.kind == PAIR:
    return [
        labels[int(p)] if r is not None else NO_PREDICTION for p, r in zip(predicted, rows)
    ], counts
  tags = [
      [labels[int(p[i])] if i is not None else NO_PREDICTION for i in where]
      for p, where in zip(predicted, positions)
  ]
  counts["words"] = sum(len(w) for w in positions)
  counts["words_without_prediction"] = sum(i is None for w in positions for i in w)
  return tags, counts


def predict_file(
    workdir: str,
    task: str,
    lang: str,
    input_path: str,
    out_path: str,
    *,
    fmt: Optional[str] = None,
    step: Union[str, int] = "best",
    batch_size: Optional[int] = None,
    max_length: Optional[int] = None,
) -> dict[str, Any]:
  """Checks the request, restores the run, predicts and writes `out_path`; returns a summary."""
  request = check_request(workdir, task, lang, input_path, out_path, fmt)
  data = request.spec.data
  batch_size = batch_size or data.eval_batch_size
  max_length = max_length or data.max_length
  limit = environment.encoder_config(request.spec, strict_attention=False).longest_sequence
  if max_length > limit:
    raise PredictError(f"--max_length={max_length}: the encoder has {limit} positions")
  mesh = sharding.make_mesh(request.spec.mesh)
  data_shards = int(np.prod([mesh.shape[axis] for axis in DATA_AXES]))
  if batch_size % data_shards:
    raise PredictError(
        f"--batch_size={batch_size} is not divisible by the {data_shards} "
        "data shards of the mesh"
    )
  trained = run.restore(workdir, step=step, mesh=mesh)
  tokenizer = tokenizers.load_tokenizer(request.spec.tokenizer_path)
  start = time.perf_counter()
  predictions, counts = predict(
      request, trained, tokenizer, batch_size=batch_size, max_length=max_length
  )
  seconds = time.perf_counter() - start
  fileio.atomic_write_text(out_path, request.document.render(predictions))
  summary = {
      "task": task,
      "lang": lang,
      "format": request.input_format,
      "step": trained.step,
      "step_reason": trained.step_reason,
      "zero_shot": (task, lang) not in {s.pair for s in request.spec.train_streams},
      "seconds": round(seconds, 2),
      "out": out_path,
      **counts,
  }
  logging.info("predicted %s", summary)
  return summary


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  summary = predict_file(
      f.workdir,
      f.task,
      f.lang,
      f.input,
      f.out,
      fmt=f.format,
      step=f.step,
      batch_size=f.batch_size,
      max_length=f.max_length,
  )
  lost = summary.get("words_without_prediction")
  print(
      f"{summary['examples']} examples of {task_label(summary)} -> {summary['out']} in "
      f"{summary['seconds']:.1f} s (step {summary['step']}: {summary['step_reason']})"
      + (f"; {lost} words past max_length tagged {NO_PREDICTION!r}" if lost else "")
  )


def task_label(summary: dict[str, Any]) -> str:
  note = " (zero-shot)" if summary["zero_shot"] else ""
  return pair_key(summary["task"], summary["lang"]) + note


def define_flags() -> None:
  flags.DEFINE_string(
      "workdir", None, "A training run directory (holds config.json).", required=True
  )
  flags.DEFINE_string("task", None, "Task name (one of the run's tasks).", required=True)
  flags.DEFINE_string("lang", None, "Language (one of the run's languages).", required=True)
  flags.DEFINE_string("input", None, "The file to label.", required=True)
  flags.DEFINE_string("out", None, "Where to write the labelled file.", required=True)
  flags.DEFINE_enum(
      "format",
      None,
      list(sources.DOCUMENT_FORMATS),
      "Input/output format (default: from the " "input's extension).",
  )
  cli.define_step_flag()
  flags.DEFINE_integer("batch_size", None, "Examples per batch (default: data.eval_batch_size).")
  flags.DEFINE_integer("max_length", None, "Sub-words per example (default: data.max_length).")


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
