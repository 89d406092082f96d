"""Stream specs -> temperature mixture -> per-host batches -> global `jax.Array`s.

Training: one stream per train `StreamSpec`, featurised on the fly by its task's featuriser
(features.py) and mixed by `mixture.MixtureIterator`; every host draws the same stream at every
step and featurises only its own rows of the global batch. Evaluation: one `EvalDataset` per
eval `StreamSpec`, read in fixed-shape batches with padding rows (`example_mask = 0`); pairs not
trained on are marked zero-shot. Batching and mixing come from a `DataSpec`.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional

import jax
import numpy as np

from hyperx_jax.config.sections import DataSpec, StreamSpec
from hyperx_jax.config.vocabulary import IGNORE_INDEX, MLM, PACKING_OFF, TOKEN, Pair
from hyperx_jax.data import features, mixture, sources

Batch = dict[str, np.ndarray]

_EVAL_TAG = 0x6576616C  # separates eval-time MLM masking from training masks.


# ------------------------------------------------------------------------------- streams


def stream_ids(spec: StreamSpec) -> Batch:
  """The per-example fields that say which stream a row comes from (a real row)."""
  return {
      "task_id": np.asarray(spec.task_id, np.int32),
      "lang_id": np.asarray(spec.lang_id, np.int32),
      "example_mask": np.asarray(1, np.int32),
  }


def make_example_fn(
    spec: StreamSpec, tokenizer, max_length: int
) -> tuple[features.Featurizer, mixture.FeaturizeFn]:
  """The stream's featuriser, and (raw example, rng) -> features with ids and example_mask."""
  featurizer = features.make_featurizer(spec.kind, tokenizer, max_length, spec.labels)
  is_mlm = spec.kind == MLM
  ids = stream_ids(spec)

  def featurize(example, rng: np.random.Generator) -> Batch | None:
    out = featurizer(example, rng) if is_mlm else featurizer(example)
    return None if out is None else {**out, **ids}

  return featurizer, featurize


def read_examples(spec: StreamSpec) -> list[dict[str, Any]]:
  """The stream's raw examples; with `sample_seed`, `max_examples` of them drawn at random
  (kept in file order), else all (the pipeline takes the first `max_examples`)."""
  examples = sources.read_source(spec.source)
  logging.info(
      "stream %s/%s: %d raw examples from %s", spec.task, spec.lang, len(examples), spec.source
  )
  if spec.sample_seed is not None and spec.max_examples is not None:
    sample = sample_indices(len(examples), spec.max_examples, spec.sample_seed)
    logging.info(
        "stream %s/%s: %d of them drawn with seed %d",
        spec.task,
        spec.lang,
        len(sample),
        spec.sample_seed,
    )
    examples = [examples[i] for i in sample]
  return examples


def sample_indices(n: int, k: int, seed: int) -> np.ndarray:
  """k of range(n) drawn without replacement with `seed`, sorted (all of them when k >= n)."""
  if k >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


MAX_REPORTED = 20  # bad labels listed per stream (the count covers all of them)


def label_problems(spec: StreamSpec, examples: Sequence[Mapping[str, Any]]) -> list[str]:
  """One line per label of `examples` outside the stream's task labels (or tokens and tags of
  different lengths), each starting with where it is (file:line, file: row N; and the word)."""
  names, problems = set(spec.labels), []
  valid = lambda label: (
      label in names
      if isinstance(label, str)
      else not isinstance(label, bool) and 0 <= label < len(spec.labels)
  )
  for ex in examples:
    where = ex.get(sources.WHERE, "?")
    if spec.kind == TOKEN:
      tokens, tags = ex["tokens"], ex["tags"]
      if len(tokens) != len(tags):
        problems.append(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
        continue
      problems += [
          f"{sources.word_where(ex, i)} {token!r}: tag {tag!r} is not a label of "
          f"task {spec.task!r}"
          for i, (token, tag) in enumerate(zip(tokens, tags))
          if not valid(tag)
      ]
    elif spec.kind != MLM and not valid(ex["label"]):
      problems.append(f"{where}: label {ex['label']!r} is not a label of task {spec.task!r}")
  return problems


def tag_map_hints(spec: StreamSpec, examples: Sequence[Mapping[str, Any]]) -> list[str]:
  """For tags outside the task's labels that a known tag map turns into its labels (the Google
  universal tagset's PRT, CONJ for UPOS): the map to set on the source."""
  if spec.kind != TOKEN or spec.source.get("tag_map") is not None:
    return []
  labels = set(spec.labels)
  unknown = {t for ex in examples for t in ex.get("tags", ()) if t not in labels}
  hints = []
  for name, table in sources.TAG_MAPS.items():
    fixed = sorted(t for t in unknown if table.get(t) in labels)
    if fixed:
      hints.append(
          f"{fixed} look like the tags tag_map={name!r} maps to these labels: set it on the "
          f'source ("tag_map": "{name}"; other tags outside the labels become X)'
      )
  return hints


TRUNCATION_SAMPLE = 10_000  # examples per stream whose lengths are measured at start-up


def truncation(
    spec: StreamSpec, examples: Sequence[Mapping[str, Any]], tokenizer, max_length: int
) -> Optional[str]:
  """A line naming what `max_length` cuts off in the stream's first TRUNCATION_SAMPLE
  examples (token tasks: the words that lose their label; pairs and text: the examples
  shortened) and the length that would keep everything; None when nothing is cut."""
  sample = list(examples[:TRUNCATION_SAMPLE])
  if not sample:
    return None
  if spec.kind == TOKEN:
    enc = tokenizer(
        [list(ex["tokens"]) for ex in sample], is_split_into_words=True, add_special_tokens=False
    )
    lengths = [len(ids) + 2 for ids in enc["input_ids"]]
    lost = 0
    for i in range(len(sample)):
      first = {}
      for position, word in enumerate(enc.word_ids(i)):
        if word is not None:
          first.setdefault(word, position)
      lost += sum(p >= max_length - 2 for p in first.values())
    what = f"{lost} words lose their label" if lost else ""
  else:
    if spec.kind == MLM:
      lengths = [
          len(ids) + 2
          for ids in tokenizer([ex["text"] for ex in sample], add_special_tokens=False)["input_ids"]
      ]
    else:
      firsts = tokenizer([ex["premise"] for ex in sample], add_special_tokens=False)["input_ids"]
      seconds = tokenizer([ex["hypothesis"] for ex in sample], add_special_tokens=False)[
          "input_ids"
      ]
      lengths = [len(a) + len(b) + 4 for a, b in zip(firsts, seconds)]
    what = ""
  cut = sum(n > max_length for n in lengths)
  if not cut:
    return None
  counted = "" if len(sample) == len(examples) else f" (of the first {len(sample):,})"
  return (
      f"stream {spec.task}/{spec.lang}: {cut:,} of {len(sample):,} examples{counted} are "
      f"longer than data.max_length = {max_length}"
      + (f": {what}" if what else "")
      + f"; max_length {max(lengths)} would keep them all, "
      f"{int(np.percentile(lengths, 99))} keeps 99 %"
  )


def log_truncation(
    specs: Sequence[StreamSpec], examples: Sequence[Sequence[Any]], tokenizer, max_length: int
) -> None:
  """At start-up: what max_length cuts off, per stream (`truncation`)."""
  for spec, raw in zip(specs, examples):
    line = truncation(spec, raw, tokenizer, max_length)
    if line:
      logging.warning("%s", line)


def read_streams(specs: Sequence[StreamSpec]) -> list[list[dict[str, Any]]]:
  """Every stream's raw examples, each label checked against its task's label set. All bad
  labels of all streams are reported at once (SourceError), before anything is built."""
  read, report = [], []
  for spec in specs:
    examples = read_examples(spec)
    problems = label_problems(spec, examples)
    if problems:
      report.append(
          f"stream {spec.task}/{spec.lang}: {len(problems)} labels outside {list(spec.labels)}:"
      )
      report += [f"  {p}" for p in problems[:MAX_REPORTED]]
      report += [f"  ... and {len(problems) - MAX_REPORTED} more"] * (len(problems) > MAX_REPORTED)
      report += [f"  {hint}" for hint in tag_map_hints(spec, examples)]
    read.append(examples)
  if report:
    raise sources.SourceError("bad labels in the data:\n" + "\n".join(report))
  return read


# ------------------------------------------------------------------------------- training


class TrainBatch(dict):
  """This host's rows of one global training batch, all from one (task, language) stream.

  A dict of numpy arrays (input_ids [b, S], attention_mask, token_type_ids, labels, task_id
  [b], lang_id, example_mask; packed: segment_ids [b, S]) that also carries `task`, `lang`, `kind` (static for the train
  step: one compile per task kind) and the global `step` that drew it.
  """

  def __init__(self, arrays: Batch, task: str, lang: str, kind: str, step: int):
    super().__init__(arrays)
    self.task, self.lang, self.kind, self.step = task, lang, kind, step


class TrainIterator:
  """Host-local training batches with a JSON-able state for exact resume.

  With `prefetch > 0` a background thread featurises up to that many batches ahead, so
  featurisation overlaps the device step; `get_state()` still describes the batches handed
  out (not the ones prefetched), so a resume continues right after the last consumed batch.
  """

  def __init__(
      self,
      specs: Sequence[StreamSpec],
      streams: Sequence[mixture.Stream],
      featurizers: Sequence[features.Featurizer],
      mix: mixture.MixtureIterator,
      prefetch: int = 0,
  ):
    self.specs = list(specs)
    self.streams = list(streams)
    self.featurizers = list(featurizers)
    self.mixture = mix
    self.prefetch = prefetch
    self._state = mix.get_state()  # after the last batch handed out
    self._worker: _Prefetcher | None = None

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self) -> TrainBatch:
    if not self.prefetch:
      batch = self._produce()
      self._state = self.mixture.get_state()
      return batch
    if self._worker is None:
      self._worker = _Prefetcher(self._produce, self.mixture.get_state, self.prefetch)
    batch, self._state = self._worker.get()
    return batch

  def _produce(self) -> TrainBatch:
    b = next(self.mixture)
    return TrainBatch(b.features, b.task, b.lang, self.specs[b.stream_id].kind, b.step)

  def get_state(self) -> dict[str, Any]:
    return copy.deepcopy(self._state)

  def set_state(self, state: Mapping[str, Any]) -> None:
    self.close()
    self.mixture.set_state(state)
    self._state = self.mixture.get_state()

  def close(self) -> None:
    """Stops the prefetch thread (a later `next` starts a new one)."""
    if self._worker is not None:
      self._worker.stop()
      self._worker = None
      self.mixture.set_state(self._state)  # forget what was prefetched but not consumed

  @property
  def rates(self) -> dict[Pair, float]:
    """Configured sampling rate of each (task, language) stream."""
    return {s.pair: float(r) for s, r in zip(self.specs, self.mixture.rates)}

  def realized_shares(self) -> dict[Pair, float]:
    """Share of the batches handed out so far that each stream received."""
    shares = self.mixture.realized_shares(self._state)
    return {s.pair: shares[st.name] for s, st in zip(self.specs, self.streams)}

  def log_shares(self) -> None:
    """Logs each stream's configured rate next to its realised share so far."""
    self.mixture.log_shares(self._state)

  def examples_per_batch(self) -> float:
    """Examples per batch, averaged over all batches handed out so far (packed: at most the
    batch size, fewer where the next example fit no row)."""
    return sum(self._state["positions"].values()) / max(self._state["step"], 1)

  def stats(self) -> dict[Pair, dict[str, int]]:
    """This host's featuriser counters per stream: examples, truncated, words_lost, skipped."""
    return {s.pair: f.stats() for s, f in zip(self.specs, self.featurizers)}


class _Prefetcher:
  """A daemon thread that keeps up to `depth` (batch, state after it) pairs ready."""

  def __init__(
      self, produce: Callable[[], TrainBatch], state: Callable[[], dict[str, Any]], depth: int
  ):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stopped = threading.Event()
    self._thread = threading.Thread(
        target=self._run, args=(produce, state), daemon=True, name="train-data-prefetch"
    )
    self._thread.start()

  def _run(self, produce, state) -> None:
    try:
      while not self._stopped.is_set():
        self._put((produce(), state()))
    except BaseException as e:  # pylint: disable=broad-except
      self._put(e)  # re-raised by get() in the consuming thread

  def _put(self, item) -> None:
    while not self._stopped.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return
      except queue.Full:
        pass

  def get(self) -> tuple[TrainBatch, dict[str, Any]]:
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._stopped.set()
      raise item
    return item

  def stop(self) -> None:
    self._stopped.set()
    self._thread.join()


def build_train_pipeline(
    specs: Sequence[StreamSpec],
    data: DataSpec,
    seed: int,
    tokenizer,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int | None = None,
    examples: Sequence[Sequence[Any]] | None = None,
) -> TrainIterator:
  """One stream per spec, mixed with temperature `data.temperature` (or fixed `data.weights`);
  yields rows [p*b, (p+1)*b) of each global batch on host p; with `data.packing` = k the
  batch's examples fill `data.packed_rows` rows of up to k examples each (`features.Packer`).
  `prefetch` (default `data.prefetch`) batches are featurised ahead in a background thread.
  `examples`: each spec's raw examples when already read (`read_streams`), else they are read
  here."""
  if not specs:
    raise ValueError("no training streams; add at least one {task, lang, source}.")
  examples = read_streams(specs) if examples is None else examples
  streams, featurizers = [], []
  for spec, raw in zip(specs, examples):
    featurizer, featurize = make_example_fn(spec, tokenizer, data.max_length)
    featurizers.append(featurizer)
    packer = (
        None
        if data.packing == PACKING_OFF
        else features.Packer(
            data.max_length, data.packing, tokenizer.pad_token_id, mlm=spec.kind == MLM
        )
    )
    streams.append(
        mixture.Stream(spec.task, spec.lang, list(raw), featurize, spec.max_examples, packer)
    )
  mix = mixture.MixtureIterator(
      streams,
      global_batch_size=data.batch_size,
      seed=seed,
      temperature=data.temperature,
      weights=None if data.weights is None else list(data.weights),
      process_index=process_index,
      process_count=process_count,
      global_rows=None if data.packing == PACKING_OFF else data.packed_rows,
      groups_per_batch=data.groups_per_batch,
  )
  return TrainIterator(
      specs, streams, featurizers, mix, data.prefetch if prefetch is None else prefetch
  )


def make_global_batch(
    local_batch: Mapping[str, np.ndarray],
    sharding: jax.sharding.Sharding | Mapping[str, jax.sharding.Sharding],
) -> dict[str, jax.Array]:
  """Host-local rows -> global arrays (batch axis split as `sharding` says, e.g.
  sharding.batch_sharding(mesh)); every process calls it with its own rows."""

  def shard_of(key: str) -> jax.sharding.Sharding:
    return sharding[key] if isinstance(sharding, Mapping) else sharding

  return {k: jax.make_array_from_process_local_data(shard_of(k), v) for k, v in local_batch.items()}


# ----------------------------------------------------------------------------- evaluation


def padding_row(example: Batch, pad_id: int) -> Batch:
  """A row that the model can run and every metric ignores (example_mask = 0)."""
  row = {k: np.zeros_like(v) for k, v in example.items()}
  row["input_ids"] = np.full_like(example["input_ids"], pad_id)
  row["labels"] = np.full_like(example["labels"], IGNORE_INDEX)
  row["task_id"], row["lang_id"] = example["task_id"], example["lang_id"]
  return row


class EvalDataset:
  """Every example of one (task, language) eval stream exactly once, in source order."""

  def __init__(
      self,
      spec: StreamSpec,
      examples: Sequence[Any],
      tokenizer,
      max_length: int,
      seed: int,
      stream_index: int,
      zero_shot: bool,
      batch_size: int,
  ):
    self.spec = spec
    self.zero_shot = zero_shot
    self.batch_size = batch_size
    self.examples = list(examples)[: spec.max_examples]
    self.featurizer, self._featurize = make_example_fn(spec, tokenizer, max_length)
    self._pad_id = tokenizer.pad_token_id
    self._seed = (seed, _EVAL_TAG, stream_index)
    self._cache: dict[int, Batch | None] = {}

  @property
  def task(self) -> str:
    return self.spec.task

  @property
  def lang(self) -> str:
    return self.spec.lang

  @property
  def kind(self) -> str:
    return self.spec.kind

  def __len__(self) -> int:
    return len(self.examples)

  def example(self, index: int) -> Batch | None:
    """Features of example `index` (None if its featuriser skipped it), cached."""
    if index not in self._cache:
      rng = np.random.default_rng([*self._seed, index])
      self._cache[index] = self._featurize(self.examples[index], rng)
    return self._cache[index]

  def __iter__(self) -> Iterator[Batch]:
    """This process's batches of the configured global eval batch size."""
    return self.batches(self.batch_size, jax.process_index(), jax.process_count())

  def num_batches(self, batch_size: int) -> int:
    return -(-len(self) // batch_size)

  def batches(
      self, batch_size: int, process_index: int = 0, process_count: int = 1
  ) -> Iterator[Batch]:
    """Fixed-shape host-local batches: host p gets rows [p*b, (p+1)*b) of each global batch
    of `batch_size`; rows past the end, and examples the featuriser skipped, are padding
    rows with example_mask = 0. Every host yields the same number of batches."""
    if batch_size % process_count:
      raise ValueError(
          f"eval batch size {batch_size} is not divisible by process_count {process_count}"
      )
    local = batch_size // process_count
    template = self._template()
    for start in range(0, self.num_batches(batch_size) * batch_size, batch_size):
      first = start + process_index * local
      rows = [self.example(i) if i < len(self) else None for i in range(first, first + local)]
      yield mixture.stack_examples([template if r is None else r for r in rows])

  def _template(self) -> Batch:
    for i in range(len(self)):
      if (ex := self.example(i)) is not None:
        return padding_row(ex, self._pad_id)
    raise ValueError(
        f"eval stream {self.task}/{self.lang}: the featuriser skipped every one "
        f"of its {len(self)} examples ({self.featurizer.stats()})"
    )


class EvalDatasets(dict):
  """(task, lang) -> EvalDataset; an unknown pair lists the known ones."""

  def __missing__(self, pair: Pair):
    raise KeyError(f"no eval stream for {pair}; known pairs: {sorted(self)}")


def build_eval_datasets(
    eval_specs: Sequence[StreamSpec],
    train_specs: Sequence[StreamSpec],
    data: DataSpec,
    seed: int,
    tokenizer,
    examples: Sequence[Sequence[Any]] | None = None,
    role: str | None = None,
) -> EvalDatasets:
  """One EvalDataset per eval spec (of `role`, if given: a pair may have a dev and a test
  stream); pairs absent from the train specs are marked zero_shot. Iterating a dataset gives
  this process's batches of `data.eval_batch_size`; `batches(...)` takes any size and host
  slice. `examples` as in build_train_pipeline (one list per spec of `eval_specs`)."""
  trained = {s.pair for s in train_specs}
  chosen = [i for i, s in enumerate(eval_specs) if role is None or s.role == role]
  if examples is None:
    examples = dict(zip(chosen, read_streams([eval_specs[i] for i in chosen])))
  datasets = EvalDatasets()
  for i in chosen:  # i, the stream's index among all eval streams, seeds its MLM masks
    spec, raw = eval_specs[i], examples[i]
    datasets[spec.pair] = EvalDataset(
        spec,
        raw,
        tokenizer,
        data.max_length,
        seed,
        i,
        zero_shot=spec.pair not in trained,
        batch_size=data.eval_batch_size,
    )
  return datasets
