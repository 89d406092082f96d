"""Temperature mixture over (task, language) streams with an exactly resumable state.

Each training step draws one stream with probability p_i ∝ (n_i / N)^(1/T) and takes a whole
batch from it (one (task, language) pair per batch, as the original Hyper-X). The draw at global
step t comes from an RNG seeded only by (seed, t), so every host picks the same stream without
communication, and resuming needs nothing but t.

A stream is a `grain.MapDataset` read by position: position `pos` of a stream of n examples
belongs to epoch `pos // n` and maps to an example through grain's index shuffle, reseeded per
epoch from a seed folded with the stream's name. The mixture's state is therefore tiny and
JSON-able: the step and one position per stream.

With a `Packer` on the streams (data.packing) a row holds several examples: the global batch of
step t is `global_rows` rows that take the drawn stream's next `global_batch_size` examples, or
fewer when one fits no row (every host packs the whole global batch, so all agree on how many it
took, and keeps its own rows). The state then also counts each stream's batches, since positions
no longer advance by a whole batch.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from hyperx_jax.data.features import Packer

Example = dict[str, np.ndarray]
# (raw example, rng that depends only on (seed, stream, epoch, example index)) -> features,
# or None to skip the example.
FeaturizeFn = Callable[[Any, np.random.Generator], Example | None]

_MIXTURE_TAG = 0x6D6978  # separates the stream-choice RNG from the per-stream seeds.
_GROUP_TAG = 0x677270  # the draw of a step's other groups (data.groups_per_batch)
_STREAM_TAG = 0x737472

STATE_VERSION = 1


def temperature_rates(sizes: Sequence[int], temperature: float = 5.0) -> np.ndarray:
  """Sampling rates p_i ∝ (n_i / N)^(1/T); T = inf gives uniform rates, T = 1 proportional."""
  sizes = np.asarray(sizes, dtype=np.float64)
  if sizes.ndim != 1 or sizes.size == 0:
    raise ValueError(f"sizes must be a non-empty 1-D sequence, got {sizes.tolist()}")
  if np.any(sizes <= 0):
    raise ValueError(f"every stream needs at least one example, got sizes {sizes.tolist()}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0 (or inf), got {temperature}")
  weights = (sizes / sizes.sum()) ** (1.0 / temperature)
  return weights / weights.sum()


def normalize_weights(weights: Sequence[float], num_streams: int) -> np.ndarray:
  """Explicit mixture weights (any positive scale) -> rates that sum to 1."""
  weights = np.asarray(weights, dtype=np.float64)
  if weights.shape != (num_streams,):
    raise ValueError(f"expected {num_streams} weights (one per stream), got {weights.tolist()}")
  if np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"weights must be >= 0 with a positive sum, got {weights.tolist()}")
  return weights / weights.sum()


def fold_seed(*values: int) -> int:
  """A 32-bit seed that depends on every value (grain's index shuffle takes uint32 seeds)."""
  return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


def draw_stream(cumulative_rates: np.ndarray, seed: int, step: int) -> int:
  """The stream of global step `step`: a function of (seed, step) only."""
  u = np.random.default_rng([seed, _MIXTURE_TAG, step]).random()
  return min(int(np.searchsorted(cumulative_rates, u, side="right")), len(cumulative_rates) - 1)


def draw_companions(
    first: int, candidates: Sequence[int], rates: np.ndarray, count: int, seed: int, step: int
) -> list[int]:
  """`count` more streams for step `step`'s batch, besides `first`: drawn from `candidates`
  (the other streams of its task) without replacement, in proportion to their rates; a
  function of (seed, step) only."""
  others = [c for c in candidates if c != first]
  if count <= 0 or not others:
    return []
  p = np.asarray([rates[c] for c in others], np.float64)
  rng = np.random.default_rng([seed, _GROUP_TAG, step])
  return [
      int(c) for c in rng.choice(others, size=min(count, len(others)), replace=False, p=p / p.sum())
  ]


@dataclasses.dataclass(frozen=True)
class Stream:
  """One (task, language) stream: raw examples and how to featurise one of them."""

  task: str
  lang: str
  examples: Sequence[Any]
  featurize: FeaturizeFn
  max_examples: int | None = None
  packer: Packer | None = None  # several examples per row (data.packing)

  @property
  def name(self) -> str:
    return f"{self.task}/{self.lang}"

  @property
  def key(self) -> int:
    """Stable id of the stream's name: shuffles and masks do not depend on where the stream
    sits in the config, or on which other streams are mixed in."""
    return zlib.crc32(self.name.encode("utf-8"))

  @property
  def size(self) -> int:
    """Examples per epoch, after the few-shot cap (the first k, before shuffling)."""
    n = len(self.examples)
    return n if self.max_examples is None else min(n, self.max_examples)


def stream_dataset(stream: Stream, seed: int) -> grain.MapDataset:
  """Infinite-by-position dataset: position -> featurised example, reshuffled every epoch.

  Position `pos` is epoch `pos // n`; grain's shuffle reseeds each epoch from
  fold_seed(seed, stream key) + epoch. MLM masking (or any randomness of the featuriser) uses
  an RNG seeded by (seed, stream key, epoch, example index), so it is identical on every host
  and after a resume.
  """
  n = stream.size
  if n == 0:
    raise ValueError(f"stream {stream.name} has no examples")
  examples = stream.examples
  shuffled = grain.MapDataset.range(n).shuffle(seed=fold_seed(seed, _STREAM_TAG, stream.key))

  def featurize(position: int, index: int) -> Example:
    # A featuriser may skip an example (None, counted by the featuriser); the position then
    # takes the next example in source order, so batches keep their size deterministically.
    for i in (index + k for k in range(n)):
      rng = np.random.default_rng([seed, stream.key, position // n, i % n])
      if (out := stream.featurize(examples[i % n], rng)) is not None:
        return out
    raise ValueError(f"stream {stream.name}: the featuriser skipped all {n} examples")

  return shuffled.map_with_index(featurize)


def stack_examples(examples: Sequence[Example]) -> dict[str, np.ndarray]:
  """List of per-example dicts -> batch dict with a leading [B] axis."""
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


@dataclasses.dataclass
class MixtureBatch:
  """A host-local batch, plus which streams (its groups, in row order; the first is the drawn
  one) and step produced it."""

  features: dict[str, np.ndarray]
  stream_id: int
  task: str
  lang: str
  step: int
  stream_ids: tuple[int, ...] = ()


class MixtureIterator:
  """Draws a stream per global step and yields this host's rows of that stream's batch.

  The global batch of step t holds positions [pos_s, pos_s + global_batch) of the drawn
  stream s; host p featurises only rows [p * b, (p + 1) * b), b = global_batch // hosts.
  Packed streams lay those examples out in `global_rows` rows (default: global_batch); every
  host then featurises the whole global batch and keeps rows [p * r, (p + 1) * r),
  r = global_rows // hosts.

  With `groups_per_batch` G > 1 the drawn stream's batch shares the step with up to G - 1
  other streams of its task (`draw_companions`): G equal blocks of rows, in that order, each
  holding global_batch / G of its stream's examples (packed: global_rows / G rows of them).
  G = 1 is the draw above, bit for bit.
  """

  def __init__(
      self,
      streams: Sequence[Stream],
      *,
      global_batch_size: int,
      seed: int,
      temperature: float = 5.0,
      weights: Sequence[float] | None = None,
      process_index: int = 0,
      process_count: int = 1,
      global_rows: int | None = None,
      groups_per_batch: int = 1,
  ):
    if not streams:
      raise ValueError("a mixture needs at least one stream")
    names = [s.name for s in streams]
    if len(set(names)) != len(names):
      raise ValueError(f"duplicate (task, language) streams in {names}")
    if global_batch_size % process_count:
      raise ValueError(
          f"global batch size {global_batch_size} is not divisible by "
          f"process_count {process_count}"
      )
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    self.packed = any(s.packer is not None for s in streams)
    global_rows = global_batch_size if global_rows is None else global_rows
    if self.packed and not (
        0 < global_rows <= global_batch_size and global_rows % process_count == 0
    ):
      raise ValueError(
          f"packed rows per batch {global_rows} must be in [1, "
          f"{global_batch_size}] and divisible by process_count {process_count}"
      )
    self.streams = list(streams)
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.global_rows = global_rows
    self.local_rows = global_rows // process_count
    self.process_index = process_index
    self.seed = int(seed)
    sizes = [s.size for s in streams]
    self.rates = (
        temperature_rates(sizes, temperature)
        if weights is None
        else normalize_weights(weights, len(streams))
    )
    self._cumulative = np.cumsum(self.rates)
    self.groups_per_batch = groups_per_batch
    self._task_streams = {
        s.task: [i for i, t in enumerate(streams) if t.task == s.task] for s in streams
    }
    for task, ids in self._task_streams.items():
      g = min(groups_per_batch, len(ids))
      if global_batch_size % g or global_rows % g:
        raise ValueError(
            f"task {task}: {g} groups per batch do not split the batch of {global_batch_size} "
            f"({global_rows} rows) evenly"
        )
    self._datasets = [stream_dataset(s, self.seed) for s in streams]
    self.step = 0
    self.positions = [0] * len(streams)
    self.batches = [0] * len(streams)
    for s, n, p in zip(names, sizes, self.rates):
      logging.info("mixture stream %-24s examples %8d  rate %.4f", s, n, p)

  def __iter__(self) -> MixtureIterator:
    return self

  def groups_of(self, task: str) -> int:
    """G of a task's batches: groups_per_batch, at most its number of streams."""
    return min(self.groups_per_batch, len(self._task_streams[task]))

  def __next__(self) -> MixtureBatch:
    sid = draw_stream(self._cumulative, self.seed, self.step)
    stream = self.streams[sid]
    group = [sid] + draw_companions(
        sid,
        self._task_streams[stream.task],
        self.rates,
        self.groups_of(stream.task) - 1,
        self.seed,
        self.step,
    )
    per_group = self.global_batch_size // len(group)  # examples of each group
    if stream.packer is None:
      first = self.process_index * self.local_batch_size
      rows = []
      for r in range(first, first + self.local_batch_size):
        g, j = divmod(r, per_group)
        rows.append(self._datasets[group[g]][self.positions[group[g]] + j])
      taken = [per_group] * len(group)
    else:
      rows, taken = [], []
      for g in group:
        position, dataset = self.positions[g], self._datasets[g]
        block, n = self.streams[g].packer.fill(
            lambda i, d=dataset, p=position: d[p + i],
            self.global_rows // len(group),
            max_examples=per_group,
        )
        rows += block
        taken.append(n)
      first = self.process_index * self.local_rows
      rows = rows[first : first + self.local_rows]
    batch = MixtureBatch(
        stack_examples(rows), sid, stream.task, stream.lang, self.step, tuple(group)
    )
    for g, n in zip(group, taken):
      self.positions[g] += n
      self.batches[g] += 1
    self.step += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable state: the step and every stream's next global position (packed or
    several groups per batch: and every stream's batches so far)."""
    state = {
        "version": STATE_VERSION,
        "step": self.step,
        "positions": {s.name: p for s, p in zip(self.streams, self.positions)},
    }
    if self._counts_batches:
      state["batches"] = {s.name: b for s, b in zip(self.streams, self.batches)}
    return state

  @property
  def _counts_batches(self) -> bool:
    """Whether a stream's batches are not its position over the batch size (packed rows, or
    groups that take a part of the batch each): then the state keeps them."""
    return self.packed or self.groups_per_batch > 1

  def set_state(self, state: Mapping[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(
          f"mixture state version {state.get('version')!r} is not {STATE_VERSION}: {state}"
      )
    positions = state["positions"]
    names = [s.name for s in self.streams]
    if sorted(positions) != sorted(names):
      raise ValueError(
          f"saved state has streams {sorted(positions)}, this mixture has {sorted(names)}"
      )
    if self._counts_batches != ("batches" in state):
      raise ValueError(
          f"saved mixture state {'counts' if 'batches' in state else 'does not count'} "
          f"batches per stream, this mixture {'does' if self._counts_batches else 'does not'} "
          "(data.packing or data.groups_per_batch changed?)"
      )
    self.step = int(state["step"])
    self.positions = [int(positions[n]) for n in names]
    self.batches = [int(b) for b in self._batches_of(state)]

  def epochs(self) -> dict[str, float]:
    """Epochs consumed so far per stream (global positions / examples per epoch)."""
    return {s.name: p / s.size for s, p in zip(self.streams, self.positions)}

  def realized_shares(self, state: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Share of the steps so far (or up to a saved `state`) that each stream received."""
    state = state or self.get_state()
    batches = self._batches_of(state)
    total = max(sum(batches), 1)
    return {s.name: b / total for s, b in zip(self.streams, batches)}

  def _batches_of(self, state: Mapping[str, Any]) -> list[int]:
    """Each stream's batches up to `state` (unpacked: its position over the batch size)."""
    if "batches" in state:
      return [state["batches"][s.name] for s in self.streams]
    return [state["positions"][s.name] // self.global_batch_size for s in self.streams]

  def log_shares(self, state: Mapping[str, Any] | None = None) -> None:
    state = state or self.get_state()
    shares = self.realized_shares(state)
    for s, p in zip(self.streams, self.rates):
      logging.info(
          "mixture stream %-24s rate %.4f  realised %.4f  (step %d)",
          s.name,
          p,
          shares[s.name],
          state["step"],
      )
