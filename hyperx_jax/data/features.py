"""Featurisers: raw examples (see sources.py) -> fixed-shape numpy arrays.

Each featuriser is called on one raw example and returns a dict of numpy arrays WITHOUT the
batch axis (S = max_length), as in docs/architecture.md "Batches":

  input_ids       [S] int32  `<s> ... </s>` padded with the tokenizer's pad id
  attention_mask  [S] int32  1 for real tokens
  token_type_ids  [S] int32  zeros (XLM-R)
  labels          pair: [] int32 (a scalar); token / MLM: [S] int32, -100 = ignored

`task_id`, `lang_id` and `example_mask` are added by the pipeline, which knows the stream.
A featuriser returns None for an example it skips (e.g. no tokens), and counts it: `stats()`
reports examples seen, truncated, words lost to truncation and skipped, so nothing is
dropped silently.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hyperx_jax.config.vocabulary import (
    IGNORE_INDEX,
    MLM,
    MLM_RATE,
    PAIR,
    TASK_KINDS,
    TOKEN,
    XNLI_LABELS,
    max_mlm_predictions,
)

WORD_START = "\u2581"  # SentencePiece's `▁`.

Features = dict[str, np.ndarray]


class Featurizer:
  """Shared parts: the tokenizer's special ids, padding to max_length, counters."""

  def __init__(self, tokenizer, max_length: int):
    if max_length < 4:
      raise ValueError(f"max_length must be >= 4, got {max_length}.")
    self.tokenizer = tokenizer
    self.max_length = max_length
    self.cls_id = tokenizer.cls_token_id
    self.sep_id = tokenizer.sep_token_id
    self.pad_id = tokenizer.pad_token_id
    self.counts = collections.Counter(examples=0, truncated=0, words_lost=0, skipped=0)

  def stats(self) -> dict[str, int]:
    """Counters since construction: examples, truncated, words_lost, skipped, ..."""
    return dict(self.counts)

  def _encode(self, text: str) -> list[int]:
    return self.tokenizer(text, add_special_tokens=False)["input_ids"]

  def pad(self, ids: Sequence[int], labels: Sequence[int] | None = None) -> Features:
    """`ids` (with specials, <= max_length) padded to max_length; per-token labels too."""
    n, s = len(ids), self.max_length
    input_ids = np.full([s], self.pad_id, np.int32)
    input_ids[:n] = ids
    mask = np.zeros([s], np.int32)
    mask[:n] = 1
    out = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros([s], np.int32),
    }
    if labels is not None:
      out["labels"] = np.full([s], IGNORE_INDEX, np.int32)
      out["labels"][:n] = labels
    return out

  def _skip(self) -> None:
    self.counts["skipped"] += 1


def _label_index(label: Any, names: Sequence[str], what: str, where: str = "?") -> int:
  if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
    if 0 <= label < len(names):
      return int(label)
    raise ValueError(f"{where}: {what} id {label} out of range for labels {list(names)}.")
  if label in names:
    return names.index(label)
  raise ValueError(
      f"{where}: Unknown {what} {label!r}; the label set is {list(names)}. "
      "Map other tag sets in the source config with 'tag_map' (a dict, or "
      "'google_universal_to_upos')."
  )


class PairFeaturizer(Featurizer):
  """Sentence pairs (XNLI, PAWS-X): `<s> A </s></s> B </s>`, longest-first truncation."""

  def __init__(self, tokenizer, max_length: int, labels: Sequence[str] = XNLI_LABELS):
    super().__init__(tokenizer, max_length)
    self.labels = tuple(labels)

  def __call__(self, example: Mapping[str, Any]) -> Features | None:
    self.counts["examples"] += 1
    if not example["premise"].strip() and not example["hypothesis"].strip():
      self._skip()
      return None
    label = _label_index(example["label"], self.labels, "label", example.get("where", "?"))
    a, b = self._encode(example["premise"]), self._encode(example["hypothesis"])
    a, b = self._truncate_longest_first(a, b, self.max_length - 4)
    ids = [self.cls_id, *a, self.sep_id, self.sep_id, *b, self.sep_id]
    out = self.pad(ids)
    out["labels"] = np.asarray(label, np.int32)
    return out

  def _truncate_longest_first(self, a: list[int], b: list[int], budget: int):
    """Cuts the longer side first; when both exceed half the budget each keeps half,
    the odd token going to the longer side (B on ties), as the fast tokenizers do."""
    if len(a) + len(b) <= budget:
      return a, b
    self.counts["truncated"] += 1
    short, long = sorted((len(a), len(b)))
    n_short, n_long = short, budget - short
    if n_short > n_long:
      n_short, n_long = budget // 2, budget // 2 + budget % 2
    na, nb = (n_long, n_short) if len(a) > len(b) else (n_short, n_long)
    return a[:na], b[:nb]


class TokenFeaturizer(Featurizer):
  """Word-level tags (NER IOB2, UPOS) on the first CONTENT sub-word of each word.

  SentencePiece often splits a pre-tokenised word of a script without spaces (Chinese,
  Japanese, Thai) into a bare `▁` followed by the content pieces; the label then goes on the
  first piece that carries content, not on `▁`. Other pieces get -100.
  """

  def __init__(self, tokenizer, max_length: int, labels: Sequence[str]):
    super().__init__(tokenizer, max_length)
    self.labels = tuple(labels)

  def __call__(self, example: Mapping[str, Any]) -> Features | None:
    self.counts["examples"] += 1
    words, tags = list(example["tokens"]), list(example["tags"])
    if len(words) != len(tags):
      raise ValueError(f"{len(words)} tokens but {len(tags)} tags in {dict(example)}.")
    if not words:
      self._skip()
      return None
    tag_ids = [_label_index(t, self.labels, "tag", example.get("where", "?")) for t in tags]
    ids, label_at = self.word_positions(words)
    labels = [IGNORE_INDEX] * len(ids)
    for word, position in enumerate(label_at):
      if position is not None:
        labels[position] = tag_ids[word]
    return self.pad(ids, labels)

  def word_positions(self, words: Sequence[str]) -> tuple[list[int], list[int | None]]:
    """`<s> pieces </s>` ids (truncated to max_length) and, per word, the position that
    carries its label (None: the word has no piece, or truncation cut it; both counted)."""
    enc = self.tokenizer(list(words), is_split_into_words=True, add_special_tokens=False)
    pieces, word_ids = enc.tokens(), enc.word_ids()
    label_at = _first_content_pieces(pieces, word_ids, len(words))
    if missing := sum(p is None for p in label_at):
      self.counts["words_without_pieces"] += missing
    keep = self.max_length - 2
    if len(pieces) > keep:
      self.counts["truncated"] += 1
      self.counts["words_lost"] += sum(p is not None and p >= keep for p in label_at)
    positions = [p + 1 if p is not None and p < keep else None for p in label_at]
    return [self.cls_id, *enc["input_ids"][:keep], self.sep_id], positions


def _first_content_pieces(
    pieces: Sequence[str], word_ids: Sequence[int | None], n_words: int
) -> list[int | None]:
  """Per word, the index of its first piece with content (else its first piece; None if
  the word produced no piece)."""
  first: list[int | None] = [None] * n_words
  content: list[int | None] = [None] * n_words
  for i, (piece, word) in enumerate(zip(pieces, word_ids)):
    if word is None:
      continue
    if first[word] is None:
      first[word] = i
    if content[word] is None and piece.strip(WORD_START):
      content[word] = i
  return [c if c is not None else f for c, f in zip(content, first)]


class MLMFeaturizer(Featurizer):
  """Masked LM on raw text: `mask_rate` of the non-special tokens (at least one, at most
  `schema.max_mlm_predictions(max_length)`) are chosen; of those 80% become `<mask>`, 10% a random
  non-special token, 10% stay. Labels hold the original ids there, -100 elsewhere.

  Deterministic given the `np.random.Generator` (or int seed) passed per call; the
  pipeline derives it from (seed, stream, epoch, index).
  """

  def __init__(self, tokenizer, max_length: int, mask_rate: float = MLM_RATE):
    super().__init__(tokenizer, max_length)
    self.mask_rate = mask_rate
    self.mask_id = tokenizer.mask_token_id
    self.max_predictions = max_mlm_predictions(max_length, mask_rate)
    special = set(tokenizer.all_special_ids)
    self.random_ids = np.asarray([i for i in range(len(tokenizer)) if i not in special], np.int32)
    self.counts.update(masked=0)

  def __call__(self, example: Mapping[str, Any], rng: np.random.Generator | int) -> Features | None:
    self.counts["examples"] += 1
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    text = example["text"].strip()
    tokens = self._encode(text) if text else []
    if not tokens:
      self._skip()
      return None
    keep = self.max_length - 2
    if len(tokens) > keep:
      self.counts["truncated"] += 1
      tokens = tokens[:keep]
    ids = np.asarray([self.cls_id, *tokens, self.sep_id], np.int32)
    positions = self._choose_positions(len(tokens), rng) + 1  # +1: after `<s>`.
    labels = np.full(ids.shape, IGNORE_INDEX, np.int32)
    labels[positions] = ids[positions]
    ids[positions] = self._corrupt(ids[positions], rng)
    self.counts["masked"] += len(positions)
    return self.pad(ids, labels)

  def _choose_positions(self, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
    # With n_tokens <= max_length - 2 the cap never cuts; it bounds the number of labelled
    # positions so the MLM loss can gather a fixed [B, max_predictions] set.
    n = min(max(1, int(round(self.mask_rate * n_tokens))), self.max_predictions)
    return np.sort(rng.choice(n_tokens, size=n, replace=False))

  def _corrupt(self, original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """80% `<mask>`, 10% a random non-special id, 10% unchanged."""
    u = rng.random(original.shape)
    random_ids = self.random_ids[rng.integers(0, len(self.random_ids), original.shape)]
    return np.where(u < 0.8, self.mask_id, np.where(u < 0.9, random_ids, original))


def make_featurizer(
    kind: str, tokenizer, max_length: int, labels: Sequence[str] | None = None
) -> Featurizer:
  """The featuriser for a task kind (see `TASK_KINDS`); `labels` for the two classifiers."""
  if kind == PAIR:
    return PairFeaturizer(tokenizer, max_length, labels or XNLI_LABELS)
  if kind == TOKEN:
    if not labels:
      raise ValueError(
          "token_classification needs its label list (e.g. schema.NER_LABELS, schema.UPOS_TAGS)."
      )
    return TokenFeaturizer(tokenizer, max_length, labels)
  if kind == MLM:
    return MLMFeaturizer(tokenizer, max_length)
  raise ValueError(f"Unknown task kind {kind!r}; known: {list(TASK_KINDS)}")


# ------------------------------------------------------------------------------- packing


class Packer:
  """Several featurised examples per row (`segment_ids`: 0 = padding, k = the k-th sentence).

  First fit in stream order: each example goes into the first row with room for its tokens, for
  another sentence (at most `max_segments`) and, for MLM, for its masked positions (the row's
  loss gathers `max_mlm_predictions(S)`). The batch ends after `max_examples` examples, or
  earlier at the first example that fits no row; the next example opens the next batch, so every
  example is used once per epoch, in order.
  A packed row keeps each sentence's tokens and labels; a pair row's labels are [max_segments]
  (one per sentence slot, -100 for empty slots); the stream ids come from the batch's first
  example.
  """

  def __init__(self, max_length: int, max_segments: int, pad_id: int, mlm: bool = False):
    if max_segments < 2:
      raise ValueError(f"packing needs at least 2 sentences per row, got {max_segments}")
    self.max_length = max_length
    self.max_segments = max_segments
    self.pad_id = pad_id
    self.max_masked = max_mlm_predictions(max_length) if mlm else max_length

  def fill(
      self, example_at: Callable[[int], Features], num_rows: int, max_examples: int | None = None
  ) -> tuple[list[Features], int]:
    """`num_rows` rows built from examples example_at(0), example_at(1), ... (at most
    `max_examples` of them); and how many it took."""
    rows: list[list[Features]] = [[] for _ in range(num_rows)]
    tokens, masked = [0] * num_rows, [0] * num_rows
    taken = 0
    first = example_at(0)
    while max_examples is None or taken < max_examples:
      example = first if taken == 0 else example_at(taken)
      n, m = length(example), labelled(example)
      fit = next(
          (
              r
              for r in range(num_rows)
              if tokens[r] + n <= self.max_length
              and masked[r] + m <= self.max_masked
              and len(rows[r]) < self.max_segments
          ),
          None,
      )
      if fit is None:
        break
      rows[fit].append(example)
      tokens[fit] += n
      masked[fit] += m
      taken += 1
    return [self.row(r, first) for r in rows], taken

  def row(self, members: Sequence[Features], template: Features) -> Features:
    """One packed row [S] from examples whose tokens fit in it; the stream ids come from
    `template` (an example of the stream). A row left empty is padding (example_mask 0)."""
    s = self.max_length
    out = {
        **template,
        "input_ids": np.full([s], self.pad_id, np.int32),
        "segment_ids": np.zeros([s], np.int32),
    }
    if not members and "example_mask" in out:
      out["example_mask"] = np.zeros_like(out["example_mask"])
    pair = template["labels"].ndim == 0
    labels = np.full([self.max_segments] if pair else [s], IGNORE_INDEX, np.int32)
    at = 0
    for k, example in enumerate(members):
      n = length(example)
      out["input_ids"][at : at + n] = example["input_ids"][:n]
      out["segment_ids"][at : at + n] = k + 1
      if pair:
        labels[k] = example["labels"]
      else:
        labels[at : at + n] = example["labels"][:n]
      at += n
    out.update(
        labels=labels,
        attention_mask=(out["segment_ids"] > 0).astype(np.int32),
        token_type_ids=np.zeros([s], np.int32),
    )
    return out


def length(example: Features) -> int:
  """Real tokens of a featurised example (its `<s> … </s>`)."""
  return int(example["attention_mask"].sum())


def labelled(example: Features) -> int:
  """Labelled positions of a per-token example (an MLM row's loss gathers them); 0 for pairs."""
  labels = example["labels"]
  return 0 if labels.ndim == 0 else int((labels != IGNORE_INDEX).sum())
