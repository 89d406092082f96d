"""Label text with a trained run: any task and languages it can generate adapters for, in one pass.

    hyperx predict --workdir=RUN --task=pos --lang=tr --input=test.conllu --out=tagged.conllu
    echo '{"text": "Bugün hava güzel", "lang": "tr"}' | hyperx predict --workdir=RUN --task=pos

In Python (a notebook), the run restored once:

    from hyperx_jax.predict import Predictor
    predictor = Predictor.from_run("runs/demo")           # the step its results report
    predictor([["Bugün", "hava", "güzel"]], task="pos", langs="tr")
    # -> [{"prediction": ["NOUN", "NOUN", "ADJ"], "probabilities": [{"ADJ": ..., ...}, ...],
    #      "lang": "tr", "vector": "its own (trained)"}]

Examples of many languages are labelled together: each batch mixes them, and the adapters of
every language of the request are generated once and reused (Hyper-X: from the task and each
language's vector; the static baselines take their task's adapter). Every output names the
language vector its adapters were generated from (`Predictor.vector`): a trained language's
own; a language with no training data reads its own never-trained row, the mean of the trained
rows or its typology vector, as the run's config says; a language the run never had is refused
unless the run can give it a typology vector (language_source typology or both) or the mean of
its trained rows.

Input (`--input`, "-" for standard input) in the format its extension names, or `--format`:

  jsonl   one object per line: a pair ("premise" and "hypothesis", or "sentence1" and
          "sentence2") or a sentence to tag ("tokens": a list of words, or "text"), with an
          optional "lang" (else --lang). Out: the same objects plus "prediction" (a pair's label,
          or one per word), "probabilities" (per label), "lang" and "vector". The format of
          "-".
  conllu  token tasks; out: each word line's UPOS column (4th) replaced by the prediction.
  iob2    token tasks, one word per line (a gold column may follow); out: `word<TAB>tag`.
  text    token tasks, one sentence per line; out: `word/TAG word/TAG ...`.

`--out` ("-": standard output) is written whole or not at all. Everything is checked before the
model is built: the task, every language, the format against the task, every input line
(file:line). Words whose sub-words fall past `data.max_length` (the run's, or --max_length) get
the tag `_` and are counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from hyperx_jax import cli, evaluate, fileio, run, sharding
from hyperx_jax import tokenizer as tokenizers
from hyperx_jax import writers
from hyperx_jax.config import RunSpec, decode, environment
from hyperx_jax.config.vocabulary import (
    DATA_AXES,
    IGNORE_INDEX,
    MLM,
    TOKEN,
    TYPOLOGY_SOURCES,
)
from hyperx_jax.data import features, mixture, pipeline, sources
from hyperx_jax.errors import UserError

NO_PREDICTION = "_"
DECIMALS = 4  # probabilities in the output


class PredictError(UserError):
  """A bad request (task, language, format, file); raised before the model is built."""


# ------------------------------------------------------------------------------- languages


def vector_of(spec: RunSpec, lang: str) -> str:
  """Which language vector the adapters of `lang` come from, in words; PredictError when the
  run has none for it."""
  trained = {s.lang for s in spec.train_streams}
  source = spec.hyperx.language_source
  if spec.method == "task_adapters":
    return "none: task adapters do not take the language"
  if lang in trained:
    return "its own (trained)"
  if spec.method == "madx":
    if lang in spec.languages:
      return "its own language adapter (never trained)"
    raise PredictError(
        f"language {lang!r}: MAD-X has a language adapter for {list(spec.languages)} only"
    )
  if source in TYPOLOGY_SOURCES:
    from hyperx_jax import typology  # pylint: disable=g-import-not-at-top

    try:
      typology.resolve(lang)
    except typology.UnknownLanguageError as e:
      raise PredictError(f"language {lang!r}: {e}") from None
    return "its typology vector" + (
        " (+ its learned row, never trained)" if source == "both" and lang in spec.languages else ""
    )
  if spec.hyperx.untrained_language == "mean":
    return "the mean of the trained languages' rows"
  if lang in spec.languages:
    return "its own row (never trained)"
  raise PredictError(
      f"language {lang!r} is not one of the run's {list(spec.languages)}, and the run has no "
      f"vector for a new language (language_source {source!r}, untrained_language 'row'): a "
      "typology source, or untrained_language 'mean', would give it one"
  )


def with_languages(spec: RunSpec, langs: Sequence[str]) -> RunSpec:
  """The run's spec with the languages it lacks appended (their vectors: `vector_of`)."""
  new = tuple(lang for lang in dict.fromkeys(langs) if lang not in spec.languages)
  if not new:
    return spec
  init = "typology" if spec.hyperx.language_source in TYPOLOGY_SOURCES else "mean"
  return dataclasses.replace(
      spec, languages=spec.languages + new, new_languages=new, new_language_init=init
  )


# ------------------------------------------------------------------------------ the predictor


@dataclasses.dataclass
class Prediction:
  """One example's prediction: labels (a pair's label, or one per word: NO_PREDICTION where
  truncation cut the word), per-label probabilities, its language and the vector used."""

  labels: Union[str, list[str]]
  probabilities: Union[dict[str, float], list[dict[str, float]]]
  lang: str
  vector: str

  def as_dict(self) -> dict[str, Any]:
    return {
        "prediction": self.labels,
        "probabilities": self.probabilities,
        "lang": self.lang,
        "vector": self.vector,
    }


class Predictor:
  """A trained run restored once, labelling examples of any of its tasks and of every language
  it has a vector for (`vector_of`); `__call__` mixes languages in its batches."""

  def __init__(self, trained: run.TrainedRun, tokenizer, *, batch_size: int, max_length: int):
    self.trained, self.tokenizer = trained, tokenizer
    self.spec = trained.spec
    self.batch_size, self.max_length = batch_size, max_length
    graphdef = trained.parts.graphdef

    def probabilities(trainable, frozen, batch, adapters, group_ids, task: str):
      """Softmax over the task's labels: pair [B, n], token [B, S, n]."""
      model = nnx.merge(graphdef, trainable, frozen)
      logits = model(batch, task, adapters=adapters, group_ids=group_ids)
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    def generate(trainable, frozen, task_ids, lang_ids, task: str):
      model = nnx.merge(graphdef, trainable, frozen)
      return model.adapter_weights(
          task_ids, lang_ids, skip_task_adapter=model.task_kind(task) == MLM
      )

    self._forward = jax.jit(probabilities, static_argnums=(5,))
    self._generate = jax.jit(generate, static_argnums=(4,))
    self.adapter_cache: dict[tuple[str, tuple[str, ...]], Any] = {}

  @classmethod
  def from_run(
      cls,
      workdir: str,
      step: Union[str, int] = "best",
      *,
      languages: Sequence[str] = (),
      batch_size: Optional[int] = None,
      max_length: Optional[int] = None,
  ) -> "Predictor":
    """Restores the run at `step` ('best': the step its results report; 'latest'; a number),
    with room for `languages` it does not have (`vector_of` says whether it can)."""
    spec = decode(run.load_config(workdir))
    for lang in languages:
      vector_of(spec, lang)
    batch_size = batch_size or spec.data.eval_batch_size
    max_length = max_length or spec.data.max_length
    limit = environment.encoder_config(spec, strict_attention=False).longest_sequence
    if max_length > limit:
      raise PredictError(f"--max_length={max_length}: the encoder has {limit} positions")
    mesh = sharding.make_mesh(spec.mesh)
    shards = int(np.prod([mesh.shape[axis] for axis in DATA_AXES]))
    if batch_size % shards:
      raise PredictError(
          f"--batch_size={batch_size} is not divisible by the {shards} data shards of the mesh"
      )
    trained = run.restore(
        workdir, step=step, mesh=mesh, extra_languages=with_languages(spec, languages).new_languages
    )
    return cls(
        trained,
        tokenizers.load_tokenizer(trained.spec.tokenizer_path),
        batch_size=batch_size,
        max_length=max_length,
    )

  def vector(self, lang: str) -> str:
    return vector_of(self.spec, lang)

  def adapters(self, task: str, langs: tuple[str, ...]) -> Any:
    """The task's adapters for each language of `langs` [L, len(langs), ...], generated once."""
    key = (task, langs)
    if key not in self.adapter_cache:
      spec, parts = self.trained.spec, self.trained.parts
      task_ids = jnp.full((len(langs),), list(spec.tasks).index(task), jnp.int32)
      lang_ids = jnp.asarray([spec.languages.index(lang) for lang in langs], jnp.int32)
      self.adapter_cache[key] = self._generate(
          parts.trainable, parts.frozen, task_ids, lang_ids, task
      )
    return self.adapter_cache[key]

  def __call__(
      self, inputs: Sequence[Any], *, task: str, langs: Union[str, Sequence[str]]
  ) -> list[dict[str, Any]]:
    """Labels `inputs` of `task`: token tasks take word lists or strings (split on
    whitespace), pair tasks (premise, hypothesis) tuples or dicts; `langs` one language or one
    per input. Returns one dict per input (`Prediction.as_dict`)."""
    langs = [langs] * len(inputs) if isinstance(langs, str) else list(langs)
    if len(langs) != len(inputs):
      raise PredictError(f"{len(inputs)} inputs but {len(langs)} languages")
    kind = self._kind(task)
    examples = [_as_example(x, kind) for x in inputs]
    return [p.as_dict() for p in self.predict(examples, task, langs)]

  def _kind(self, task: str) -> str:
    if task not in self.spec.tasks:
      raise PredictError(f"task {task!r} is not one of the run's {list(self.spec.tasks)}")
    kind = self.spec.tasks[task].kind
    if kind == MLM:
      raise PredictError(f"task {task!r} is masked LM; predict labels classification tasks")
    return kind

  def predict(
      self, examples: Sequence[dict], task: str, langs: Sequence[str], progress: bool = False
  ) -> list[Prediction]:
    """Predictions for featuriser-ready examples ({"tokens"} or {"premise", "hypothesis"})."""
    kind, labels = self._kind(task), self.spec.tasks[task].labels
    vectors = {lang: self.vector(lang) for lang in dict.fromkeys(langs)}
    missing = [lang for lang in vectors if lang not in self.trained.spec.languages]
    if missing:
      raise PredictError(f"languages {missing}: restore with Predictor.from_run(languages=...)")
    order = tuple(vectors)
    adapters = self.adapters(task, order)
    featurizer = features.make_featurizer(kind, self.tokenizer, self.max_length, labels)
    spec = self.trained.spec
    task_id = np.int32(list(spec.tasks).index(task))
    rows, positions = [], []
    for example, lang in zip(examples, langs):
      if kind == TOKEN:
        input_ids, where = featurizer.word_positions(example["tokens"])
        row = featurizer.pad(input_ids, [IGNORE_INDEX] * len(input_ids))
      else:
        row, where = featurizer({**example, "label": 0}), None
      if row is not None:  # group_id: the example's language among the request's adapters
        row = {
            **row,
            "task_id": task_id,
            "lang_id": np.int32(spec.languages.index(lang)),
            "group_id": np.int32(order.index(lang)),
        }
      rows.append(row)
      positions.append(where)
    real = [r for r in rows if r is not None]
    if not real:
      raise PredictError("no example to predict (the featuriser skipped every one)")
    filler = pipeline.padding_row(real[0], self.tokenizer.pad_token_id)
    mesh, parts = self.trained.mesh, self.trained.parts
    out = []
    starts = range(0, len(rows), self.batch_size)
    for start in (writers.progress_bar(starts, f"predict {task}") if progress else starts):
      chunk = [r if r is not None else filler for r in rows[start : start + self.batch_size]]
      batch = mixture.stack_examples(chunk + [filler] * (self.batch_size - len(chunk)))
      global_batch = pipeline.make_global_batch(batch, sharding.batch_sharding(mesh))
      probs = evaluate.to_host(
          self._forward(
              parts.trainable, parts.frozen, global_batch, adapters, global_batch["group_id"], task
          )
      )
      out.extend(probs[: len(chunk)])
    return [
        _prediction(p, r is None, where, labels, lang, vectors[lang])
        for p, r, where, lang in zip(out, rows, positions, langs)
    ]


def _as_example(x: Any, kind: str) -> dict[str, Any]:
  if kind == TOKEN:
    words = x.split() if isinstance(x, str) else list(x)
    if not words or not all(isinstance(w, str) and w for w in words):
      raise PredictError(f"{x!r}: a token task takes a list of words or a non-empty string")
    return {"tokens": words}
  if isinstance(x, dict) and {"premise", "hypothesis"} <= set(x):
    return {"premise": x["premise"], "hypothesis": x["hypothesis"]}
  if isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(s, str) for s in x):
    return {"premise": x[0], "hypothesis": x[1]}
  raise PredictError(f"{x!r}: a pair task takes (premise, hypothesis) or a dict with both")


def _rounded(probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
  return {label: round(float(p), DECIMALS) for label, p in zip(labels, probabilities)}


def _prediction(probs, skipped, where, labels, lang, vector) -> Prediction:
  if where is None:  # a pair
    if skipped:
      return Prediction(NO_PREDICTION, {}, lang, vector)
    return Prediction(labels[int(np.argmax(probs))], _rounded(probs, labels), lang, vector)
  tags = [labels[int(np.argmax(probs[i]))] if i is not None else NO_PREDICTION for i in where]
  dists = [_rounded(probs[i], labels) if i is not None else {} for i in where]
  return Prediction(tags, dists, lang, vector)


# ---------------------------------------------------------------------------- files, command


def input_format(path: str, fmt: Optional[str], kind: str) -> str:
  """--format, else the one the file's extension names (jsonl for "-"); it must suit the task."""
  allowed = [name for name, kinds in sources.DOCUMENT_FORMATS.items() if kind in kinds]
  if fmt is None:
    fmt = (
        "jsonl"
        if path == sources.base.STDIN
        else sources.FORMAT_OF_SUFFIX.get(os.path.splitext(path)[1].lower())
    )
    if fmt is None:
      raise PredictError(
          f"{path}: cannot tell the format from the extension; pass --format, one of {allowed}"
      )
  if fmt not in allowed:
    raise PredictError(f"format {fmt!r} does not suit a {kind} task; use one of {allowed}")
  return fmt


def predict_file(
    workdir: str,
    task: str,
    lang: Optional[str],
    input_path: str,
    out_path: str,
    *,
    fmt: Optional[str] = None,
    step: Union[str, int] = "best",
    batch_size: Optional[int] = None,
    max_length: Optional[int] = None,
) -> dict[str, Any]:
  """Checks the request, reads the input, restores the run, predicts and writes `out_path`
  ("-": standard output); returns a summary."""
  spec = decode(run.load_config(workdir))
  if task not in spec.tasks:
    raise PredictError(f"--task={task!r} is not in the run; known: {list(spec.tasks)}")
  kind = spec.tasks[task].kind
  if kind == MLM:
    raise PredictError(
        f"task {task!r} is masked LM; predict labels classification tasks: "
        f"{[t for t, s in spec.tasks.items() if s.kind != MLM]}"
    )
  if (
      out_path != sources.base.STDIN
      and input_path != sources.base.STDIN
      and (os.path.abspath(out_path) == os.path.abspath(input_path))
  ):
    raise PredictError(f"--out {out_path} is the input file; choose another path")
  fmt = input_format(input_path, fmt, kind)
  document = sources.FORMATS[fmt].read_document(input_path)
  langs = [example.get("lang", lang) for example in document.examples]
  if None in langs:
    raise PredictError(
        f"{input_path}: example {langs.index(None) + 1} names no language: "
        'give --lang, or a "lang" field in each line'
    )
  for each in dict.fromkeys(langs):
    vector_of(spec, each)
  predictor = Predictor.from_run(
      workdir, step, languages=langs, batch_size=batch_size, max_length=max_length
  )
  start = time.perf_counter()
  predictions = predictor.predict(document.examples, task, langs, progress=True)
  seconds = time.perf_counter() - start
  rendered = document.render([p.as_dict() if fmt == "jsonl" else p.labels for p in predictions])
  if out_path == sources.base.STDIN:
    sys.stdout.write(rendered)
    sys.stdout.flush()
  else:
    fileio.atomic_write_text(out_path, rendered)
  trained = {s.pair for s in spec.train_streams}
  words = [t for p in predictions if isinstance(p.labels, list) for t in p.labels]
  lost = sum(t == NO_PREDICTION for t in words)
  summary = {
      "task": task,
      "languages": {each: predictor.vector(each) for each in dict.fromkeys(langs)},
      "zero_shot": sorted({each for each in langs if (task, each) not in trained}),
      "format": fmt,
      "step": predictor.trained.step,
      "step_reason": predictor.trained.step_reason,
      "examples": len(predictions),
      "seconds": round(seconds, 2),
      "out": out_path,
      "words": len(words),
      "words_without_prediction": lost,
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
  lost = summary["words_without_prediction"]
  zero = f"; zero-shot in {summary['zero_shot']}" if summary["zero_shot"] else ""
  message = (
      f"{summary['examples']} examples of {summary['task']} in "
      f"{sorted(summary['languages'])}{zero} -> {summary['out']} in {summary['seconds']:.1f} s "
      f"(step {summary['step']}: {summary['step_reason']})"
      + (f"; {lost} words past max_length tagged {NO_PREDICTION!r}" if lost else "")
  )
  print(message, file=sys.stderr if summary["out"] == sources.base.STDIN else sys.stdout)


def define_flags() -> None:
  flags.DEFINE_string(
      "workdir", None, "A training run directory (holds config.json).", required=True
  )
  flags.DEFINE_string("task", None, "Task name (one of the run's tasks).", required=True)
  flags.DEFINE_string("lang", None, 'The language of examples without a "lang" field.')
  flags.DEFINE_string("input", "-", 'The file to label ("-": standard input, JSON lines).')
  flags.DEFINE_string("out", "-", 'Where to write the labelled file ("-": standard output).')
  flags.DEFINE_enum(
      "format",
      None,
      list(sources.DOCUMENT_FORMATS),
      "Input/output format (default: from the input's extension; jsonl for -).",
  )
  cli.define_step_flag()
  flags.DEFINE_integer("batch_size", None, "Examples per batch (default: data.eval_batch_size).")
  flags.DEFINE_integer("max_length", None, "Sub-words per example (default: data.max_length).")


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
