"""Evaluation metrics (host side, numpy): XTREME conventions.

- pair classification (XNLI): accuracy.
- NER (WikiANN): entity-level precision / recall / F1 over IOB2 tags, computed exactly as the
  `seqeval` package does in its default mode (`seqeval.metrics.f1_score` with default args).
- POS (UD UPOS): token accuracy and the "F1" XTREME reports, i.e. the same seqeval F1 applied to
  the tag sequences (a POS tag such as `NOUN` reads as prefix `N`, type `OUN`).
- MLM: masked-token accuracy (and the caller's loss).

seqeval's chunker, reproduced here so that seqeval stays a test-only dependency:

- a tag reads as prefix = its first character, type = what follows the first `-` after it
  (`B-PER` -> (`B`, `PER`); `O` -> (`O`, `_`)); an empty type reads as `_`;
- sentences are concatenated with an `O` between them (and one at the end), and the chunk
  boundaries below are applied over that flat sequence;
- a chunk ends before position i when the previous prefix is `E`/`S`, or is `B`/`I` followed by
  `B`/`S`/`O`, or when the type changes after a prefix other than `O`/`.`;
- a chunk starts at i on `B`/`S`, on `I`/`E` after `O`/`E`/`S`, and on a type change (prefix
  other than `O`/`.`). An `I-` tag after `O` therefore opens an entity, and `B-PER I-LOC` is two
  entities.

Counting is micro-averaged over entity types; undefined ratios are 0 (seqeval's default).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from hyperx_jax.config.vocabulary import IGNORE_INDEX, TASK_KINDS, TOKEN, TOKEN_METRICS

Entity = Tuple[str, int, int]  # (type, first position, last position) in the flat sequence

_ENDS_AFTER = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
_STARTS_AFTER = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def split_tag(tag: str) -> Tuple[str, str]:
  """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '_'); 'NOUN' -> ('N', 'OUN') (seqeval's reading)."""
  if not tag:
    raise ValueError("empty tag string; expected an IOB2 tag such as 'B-PER' or 'O'")
  return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
  if prev_prefix in ("E", "S") or (prev_prefix, prefix) in _ENDS_AFTER:
    return True
  return prev_prefix not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_prefix: str, prefix: str, prev_type: str, type_: str) -> bool:
  if prefix in ("B", "S") or (prev_prefix, prefix) in _STARTS_AFTER:
    return True
  return prefix not in ("O", ".") and prev_type != type_


class EntityChunker:
  """Streaming version of seqeval's `get_entities` over sentences joined by 'O'."""

  def __init__(self):
    self.position = 0
    self.prev_prefix, self.prev_type = "O", ""
    self.begin = 0
    self.entities: Set[Entity] = set()

  def _push(self, tag: str) -> None:
    prefix, type_ = split_tag(tag)
    if _chunk_ends(self.prev_prefix, prefix, self.prev_type, type_):
      self.entities.add((self.prev_type, self.begin, self.position - 1))
    if _chunk_starts(self.prev_prefix, prefix, self.prev_type, type_):
      self.begin = self.position
    self.prev_prefix, self.prev_type = prefix, type_
    self.position += 1

  def add_sentence(self, tags: Sequence[str]) -> None:
    for tag in list(tags) + ["O"]:
      self._push(tag)

  def closed_entities(self) -> Set[Entity]:
    """Every entity, including one that seqeval's final 'O' closes; state is left as is."""
    prefix, type_ = split_tag("O")
    if _chunk_ends(self.prev_prefix, prefix, self.prev_type, type_):
      return self.entities | {(self.prev_type, self.begin, self.position - 1)}
    return set(self.entities)


def get_entities(sentences: Sequence[Sequence[str]]) -> Set[Entity]:
  """Entities of a list of tag sentences, positions in seqeval's flat sequence."""
  chunker = EntityChunker()
  for tags in sentences:
    chunker.add_sentence(tags)
  return chunker.closed_entities()


def _ratio(num: float, den: float) -> float:
  return float(num) / float(den) if den else 0.0


def prf_from_counts(true_positives: int, predicted: int, gold: int) -> Dict[str, float]:
  precision = _ratio(true_positives, predicted)
  recall = _ratio(true_positives, gold)
  f1 = _ratio(2 * precision * recall, precision + recall)
  return {"precision": precision, "recall": recall, "f1": f1}


def entity_prf(gold_entities: Set[Entity], pred_entities: Set[Entity]) -> Dict[str, float]:
  """Micro precision / recall / F1 over entity sets (exact span and type match)."""
  tp = len(gold_entities & pred_entities)
  return prf_from_counts(tp, len(pred_entities), len(gold_entities))


def _check_same_lengths(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
  if len(gold) != len(pred):
    raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
  for i, (g, p) in enumerate(zip(gold, pred)):
    if len(g) != len(p):
      raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, float]:
  """seqeval's default-mode micro precision/recall/F1 for lists of tag sentences."""
  _check_same_lengths(gold, pred)
  return entity_prf(get_entities(gold), get_entities(pred))


def accuracy(pred: np.ndarray, gold: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
  """Fraction of positions where pred == gold, over positions with mask != 0 (all if None)."""
  pred, gold = np.asarray(pred), np.asarray(gold)
  if pred.shape != gold.shape:
    raise ValueError(f"accuracy: predictions {pred.shape} and gold {gold.shape} differ in shape")
  mask = (
      np.ones(gold.shape, bool)
      if mask is None
      else np.broadcast_to(np.asarray(mask) != 0, gold.shape)
  )
  return _ratio(np.sum((pred == gold) & mask), np.sum(mask))


def pos_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, float]:
  """POS: token accuracy and XTREME's seqeval F1 over the tag sequences."""
  _check_same_lengths(gold, pred)
  flat_gold = [t for s in gold for t in s]
  flat_pred = [t for s in pred for t in s]
  acc = _ratio(sum(g == p for g, p in zip(flat_gold, flat_pred)), len(flat_gold))
  return {"accuracy": acc, "f1": entity_f1(gold, pred)["f1"]}


def _example_mask(example_mask: Optional[np.ndarray], batch: int) -> np.ndarray:
  if example_mask is None:
    return np.ones([batch], bool)
  example_mask = np.asarray(example_mask)
  if example_mask.shape != (batch,):
    raise ValueError(f"example_mask has shape {example_mask.shape}, expected ({batch},)")
  return example_mask != 0


def _as_ids(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Predicted ids with the labels' shape; logits (one extra trailing axis) are argmaxed."""
  predictions = np.asarray(predictions)
  if predictions.ndim == labels.ndim + 1:
    predictions = predictions.argmax(-1)
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions {predictions.shape} do not match labels {labels.shape}")
  return predictions


def to_tag_sentences(
    predictions: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    example_mask: Optional[np.ndarray] = None,
) -> Tuple[List[List[str]], List[List[str]]]:
  """Padded [B, S] labels/predictions -> (gold, predicted) tag-name lists per sentence.

  Positions whose label is -100 (special tokens, non-first sub-words, padding) are dropped;
  examples with example_mask == 0 (eval padding) are skipped. Predictions may be ids [B, S] or
  logits [B, S, C].
  """
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"token labels must be [batch, seq], got shape {labels.shape}")
  predictions = _as_ids(predictions, labels)
  keep = _example_mask(example_mask, labels.shape[0])
  names = np.asarray(list(label_names), dtype=object)
  for arr, what in ((labels, "label"), (predictions, "prediction")):
    bad = arr[(arr != IGNORE_INDEX) & ((arr < 0) | (arr >= len(names)))]
    if bad.size:
      raise ValueError(
          f"{what} id {int(bad[0])} outside the {len(names)} label names {list(label_names)}"
      )
  gold_tags, pred_tags = [], []
  for row_labels, row_pred in zip(labels[keep], predictions[keep]):
    valid = row_labels != IGNORE_INDEX
    gold_tags.append(names[row_labels[valid]].tolist())
    pred_tags.append(names[row_pred[valid]].tolist())
  return gold_tags, pred_tags


@dataclasses.dataclass
class MetricAccumulator:
  """Streaming metrics for one (task, language) pair.

  kind: `pair_classification` -> {accuracy}; `token_classification` with metric `entity_f1`
  -> {precision, recall, f1} or `pos` -> {accuracy, f1}; `mlm` -> {accuracy} (masked tokens).
  A `loss` passed to `add` (the batch mean) is averaged, weighted by the examples counted.
  """

  kind: str
  metric: Optional[str] = None
  label_names: Optional[Sequence[str]] = None

  def __post_init__(self):
    if self.kind not in TASK_KINDS:
      raise ValueError(f"unknown task kind {self.kind!r}; known kinds: {list(TASK_KINDS)}")
    if self.kind == TOKEN:
      if self.metric not in TOKEN_METRICS:
        raise ValueError(
            f"token_classification needs metric in {list(TOKEN_METRICS)}, got {self.metric!r}"
        )
      if not self.label_names:
        raise ValueError("token_classification metrics need label_names (tag strings by id)")
    self._correct = 0
    self._total = 0
    self._examples = 0
    self._loss_sum = 0.0
    self._loss_weight = 0
    self._gold_chunks = EntityChunker()
    self._pred_chunks = EntityChunker()

  def add(
      self,
      batch_predictions: np.ndarray,
      batch_labels: np.ndarray,
      example_mask: Optional[np.ndarray] = None,
      *,
      loss: Optional[float] = None,
  ) -> None:
    """predictions: ids [B] / [B, S] or logits with one more axis; labels with -100 ignored."""
    labels = np.asarray(batch_labels)
    predictions = _as_ids(batch_predictions, labels)
    keep = _example_mask(example_mask, labels.shape[0])
    n_examples = int(keep.sum())
    self._examples += n_examples
    if loss is not None:
      self._loss_sum += float(loss) * n_examples
      self._loss_weight += n_examples
    if self.kind == TOKEN:
      self._add_tags(*to_tag_sentences(predictions, labels, self.label_names, keep))
      return
    counted = (labels != IGNORE_INDEX) & keep.reshape((-1,) + (1,) * (labels.ndim - 1))
    self._correct += int(np.sum((predictions == labels) & counted))
    self._total += int(np.sum(counted))

  def _add_tags(self, gold: List[List[str]], pred: List[List[str]]) -> None:
    for g, p in zip(gold, pred):
      self._gold_chunks.add_sentence(g)
      self._pred_chunks.add_sentence(p)
      self._correct += sum(a == b for a, b in zip(g, p))
      self._total += len(g)

  @property
  def num_examples(self) -> int:
    return self._examples

  def result(self) -> Dict[str, float]:
    """Metrics so far (the accumulator can keep accumulating afterwards)."""
    out: Dict[str, float] = {}
    if self.kind == TOKEN:
      prf = entity_prf(self._gold_chunks.closed_entities(), self._pred_chunks.closed_entities())
      if self.metric == "entity_f1":
        out.update(prf)
      else:
        out.update(accuracy=_ratio(self._correct, self._total), f1=prf["f1"])
    else:
      out["accuracy"] = _ratio(self._correct, self._total)
    if self._loss_weight:
      out["loss"] = self._loss_sum / self._loss_weight
    return out
