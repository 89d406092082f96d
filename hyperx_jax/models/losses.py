"""Losses and predictions of a HyperXModel for one task's batch.

MLM: the positions with labels != IGNORE_INDEX are gathered to a fixed K =
`max_mlm_predictions(S)` = ceil(0.15·S) + 1 per example (a static-size top-k selection, in
position order), so the vocabulary-sized logits are computed at K positions only. The featuriser
masks at most 15 % of the tokens, so nothing is dropped; masked positions beyond K would be
counted in aux["mlm_dropped"] and left out of the loss.

Packed rows (`segment_ids`, data.packing): token and MLM labels keep [B, S]; a pair batch's
labels are [B, K], one per sentence slot, and its logits [B, K, n]. The mean runs over the same
labelled tokens or sentences as in the unpacked batch, so the two give the same loss.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp

from hyperx_jax.config.vocabulary import IGNORE_INDEX, MLM, PAIR, max_mlm_predictions
from hyperx_jax.models.model import HyperXModel


def select_mlm_positions(labels: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """labels [B, S] -> (positions [B, K], labels at them [B, K] (-100 = padding), dropped [B]).

  The first K masked positions of each row, in order (static size: top-k of a position score).
  """
  seq = labels.shape[1]
  masked = labels != IGNORE_INDEX  # [B, S]
  score = jnp.where(masked, seq - jnp.arange(seq), 0)  # earlier masked positions score higher
  top, positions = jax.lax.top_k(score, k)  # [B, K]
  picked = jnp.take_along_axis(labels, positions, axis=1)
  picked = jnp.where(top > 0, picked, IGNORE_INDEX)
  dropped = jnp.maximum(masked.sum(-1) - k, 0)
  return positions.astype(jnp.int32), picked, dropped


def segment_slots(model: HyperXModel, batch: Mapping[str, jax.Array], task: str) -> int:
  """K, the segment slots of a packed pair batch (its labels are [B, K]); 0 otherwise."""
  if "segment_ids" not in batch or model.task_kind(task) != PAIR:
    return 0
  return batch["labels"].shape[1]


def _targets(
    model: HyperXModel,
    batch: Mapping[str, jax.Array],
    task: str,
    dropout_rng: Optional[jax.Array],
    groups: int = 1,
) -> tuple[jax.Array, jax.Array, jax.Array, dict]:
  """(logits [..., n], labels [...], weights [...], extra aux) for any task kind; `groups`:
  the batch's (task, language) groups (`HyperXModel.encode`)."""
  kind = model.task_kind(task)
  labels = batch["labels"]
  extra = {}
  if kind == MLM:
    positions, labels, dropped = select_mlm_positions(labels, max_mlm_predictions(labels.shape[1]))
    logits = model(batch, task, dropout_rng=dropout_rng, mlm_positions=positions, groups=groups)
    extra["mlm_dropped"] = dropped.sum()
  else:
    logits = model(
        batch,
        task,
        dropout_rng=dropout_rng,
        num_segments=segment_slots(model, batch, task),
        groups=groups,
    )
  example_mask = batch.get("example_mask")
  weights = labels != IGNORE_INDEX
  if example_mask is not None:
    weights &= example_mask.astype(bool).reshape(example_mask.shape + (1,) * (labels.ndim - 1))
  return logits, labels, weights, extra


def compute_loss(
    model: HyperXModel,
    batch: Mapping[str, jax.Array],
    task: str,
    dropout_rng: Optional[jax.Array] = None,
    groups: int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean cross-entropy over non-ignored labels of real examples (every group's together);
  aux: count, accuracy."""
  logits, labels, weights, aux = _targets(model, batch, task, dropout_rng, groups)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  safe = jnp.where(weights, labels, 0)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  count = weights.sum()
  denom = jnp.maximum(count, 1).astype(jnp.float32)
  loss = jnp.where(weights, nll, 0.0).sum() / denom
  correct = ((logits.argmax(-1) == safe) & weights).sum()
  aux.update(loss=loss, count=count, correct=correct, accuracy=correct / denom)
  return loss, aux


def predict(model: HyperXModel, batch: Mapping[str, jax.Array], task: str) -> jax.Array:
  """Argmax predictions: pair [B]; token [B, S]; mlm [B, K] at `select_mlm_positions`."""
  if model.task_kind(task) == MLM:
    labels = batch["labels"]
    positions, _, _ = select_mlm_positions(labels, max_mlm_predictions(labels.shape[1]))
    logits = model(batch, task, mlm_positions=positions)
  else:
    logits = model(batch, task, num_segments=segment_slots(model, batch, task))
  return logits.argmax(-1).astype(jnp.int32)
