"""Packed rows (several sentences per row, `segment_ids`) give the same per-example logits, loss
and trainable gradient as the same examples one per padded row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyperx_jax.config.sections import TaskSpec
from hyperx_jax.config.vocabulary import IGNORE_INDEX, MLM, PAIR, max_mlm_predictions
from hyperx_jax.models import heads, weights, xlmr
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.losses import compute_loss, segment_slots, select_mlm_positions
from hyperx_jax.models.model import HyperXModel
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.optim import trainable_filter

from hf_fixtures import make_tiny_xlmr_checkpoint

V, PAD = 60, 1
LENGTHS = (6, 4, 9, 3, 5)  # tokens per example, <s> and </s> included
UNPACKED_S = 10
ROWS = ((0, 1, 4), (2, 3))  # examples per packed row (15 and 12 tokens)
PACKED_S = 16
TASKS = {
    "xnli": TaskSpec("xnli", PAIR, ("e", "n", "c")),
    "ner": TaskSpec("ner", "token_classification", tuple("OBIbiXY")),
    "mlm": TaskSpec("mlm", MLM),
}
RULES = [
    (r"^adapters/", True),
    (r"^heads/", True),
    (r"(^|/)(ln|attention_ln|output_ln)/", True),
    (r".*", False),
]


@pytest.fixture(scope="module")
def models(checkpoint):
  """method -> model, built once per module."""
  cache = {}

  def model(method: str) -> HyperXModel:
    if method not in cache:
      cache[method] = _model(checkpoint, method)
    return cache[method]

  return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return make_tiny_xlmr_checkpoint(
      tmp_path_factory.mktemp("packing") / "ckpt",
      mlm=True,
      vocab_size=V,
      hidden=32,
      layers=2,
      heads=4,
      intermediate=64,
      max_positions=40,
  )


def _model(checkpoint, method: str) -> HyperXModel:
  enc = EncoderConfig.from_hf(checkpoint, hidden_dropout=0.0, attention_dropout=0.0)
  model = HyperXModel(
      enc, TASKS, ["en", "tr"], method, HyperNetConfig(bottleneck=8), rngs=nnx.Rngs(0)
  )
  weights.load_encoder_weights(model.encoder, checkpoint)
  rng = np.random.default_rng(1)  # adapters and heads away from their identity / zero init
  for part in (model.adapters, model.heads):
    for _, p in nnx.to_flat_state(nnx.state(part, nnx.Param)):
      p[...] = jnp.asarray(rng.normal(0, 0.1, p.shape), jnp.float32)
  return model


def _examples(kind: str, seed: int = 0) -> list[dict]:
  """Per example: ids [n] (`<s> … </s>`), token labels [n] or a pair label."""
  rng = np.random.default_rng(seed)
  out = []
  for n in LENGTHS:
    ids = np.concatenate([[0], rng.integers(3, V, n - 2), [2]]).astype(np.int32)
    labels = np.full(n, IGNORE_INDEX, np.int32)
    if kind == "token":
      labels[1:-1] = np.where(rng.random(n - 2) < 0.6, rng.integers(0, 7, n - 2), IGNORE_INDEX)
      labels[1] = rng.integers(0, 7)
    elif kind == "mlm":
      at = rng.integers(1, n - 1)
      labels[at], ids[at] = ids[at], 4  # one masked position (4 stands for <mask>)
    out.append(dict(ids=ids, labels=labels, pair_label=int(rng.integers(0, 3))))
  return out


def _batch(
    rows: tuple[tuple[int, ...], ...], examples: list[dict], seq: int, kind: str, task_id: int
) -> dict:
  """Rows of examples laid side by side; `segment_ids` only when some row holds several."""
  packed = any(len(r) > 1 for r in rows)
  slots = max(len(r) for r in rows)
  b = len(rows)
  ids = np.full((b, seq), PAD, np.int32)
  segments = np.zeros((b, seq), np.int32)
  labels = np.full((b, seq), IGNORE_INDEX, np.int32)
  pair = np.full((b, slots), IGNORE_INDEX, np.int32)
  for r, members in enumerate(rows):
    at = 0
    for k, e in enumerate(members):
      ex = examples[e]
      n = len(ex["ids"])
      ids[r, at : at + n], labels[r, at : at + n], segments[r, at : at + n] = (
          ex["ids"],
          ex["labels"],
          k + 1,
      )
      pair[r, k] = ex["pair_label"]
      at += n
  batch = dict(
      input_ids=ids,
      attention_mask=(segments > 0).astype(np.int32),
      token_type_ids=np.zeros_like(ids),
      labels=(pair if packed else pair[:, 0]) if kind == "pair" else labels,
      task_id=np.full(b, task_id, np.int32),
      lang_id=np.full(b, 1, np.int32),
      example_mask=np.ones(b, np.int32),
  )
  if packed:
    batch["segment_ids"] = segments
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _per_example(logits: np.ndarray, rows, kind: str) -> list[np.ndarray]:
  """Each example's logits in example order: its tokens' rows (token), its slot (pair), its
  masked positions' rows (mlm, in position order)."""
  out = {}
  for r, members in enumerate(rows):
    at = 0
    for k, e in enumerate(members):
      n = LENGTHS[e]
      if kind == "token":
        out[e] = logits[r, at : at + n]
      elif kind == "pair":
        out[e] = logits[r, k] if logits.ndim == 3 else logits[r]
      at += n
  return [out[e] for e in range(len(LENGTHS))]


def _mlm_per_example(logits, batch, rows) -> list[np.ndarray]:
  positions, _, _ = select_mlm_positions(
      batch["labels"], max_mlm_predictions(batch["labels"].shape[1])
  )
  positions = np.asarray(positions)
  out = {}
  for r, members in enumerate(rows):
    starts = np.cumsum([0] + [LENGTHS[e] for e in members])
    for k, e in enumerate(members):
      picked = (positions[r] >= starts[k]) & (positions[r] < starts[k + 1])
      picked &= np.asarray(batch["labels"])[r, positions[r]] != IGNORE_INDEX
      out[e] = logits[r, picked]
  return [out[e] for e in range(len(LENGTHS))]


def _run_both(model: HyperXModel, batches: tuple[dict, dict], task: str):
  """(loss, logits, trainable gradient) of each batch, both under one jit."""
  graphdef, trainable, frozen = nnx.split(model, trainable_filter(RULES, model)[0], ...)

  def loss_fn(trainable, batch):
    m = nnx.merge(graphdef, trainable, frozen)
    loss, _ = compute_loss(m, batch, task)
    if TASKS[task].kind == MLM:
      positions, _, _ = select_mlm_positions(
          batch["labels"], max_mlm_predictions(batch["labels"].shape[1])
      )
      return loss, m(batch, task, mlm_positions=positions)
    return loss, m(batch, task, num_segments=segment_slots(m, batch, task))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  both = jax.jit(lambda t: tuple(grad_fn(t, b) for b in batches))(trainable)
  return [
      (float(loss), np.asarray(logits), nnx.to_flat_state(grads)) for (loss, logits), grads in both
  ]


KINDS = {"ner": "token", "xnli": "pair", "mlm": "mlm"}


@pytest.mark.parametrize("method", ["hyperx", "task_adapters"])
@pytest.mark.parametrize("task", ["ner", "xnli", "mlm"])
def test_packed_rows_equal_unpacked(models, method, task):
  model = models(method)
  kind = KINDS[task]
  examples = _examples(kind)
  task_id = list(TASKS).index(task)
  alone = tuple((e,) for e in range(len(LENGTHS)))
  unpacked = _batch(alone, examples, UNPACKED_S, kind, task_id)
  packed = _batch(ROWS, examples, PACKED_S, kind, task_id)
  (loss_u, logits_u, grads_u), (loss_p, logits_p, grads_p) = _run_both(
      model, (unpacked, packed), task
  )
  if kind == "mlm":
    per_u, per_p = (
        _mlm_per_example(logits_u, unpacked, alone),
        _mlm_per_example(logits_p, packed, ROWS),
    )
  else:
    per_u, per_p = _per_example(logits_u, alone, kind), _per_example(logits_p, ROWS, kind)
  for e, (u, p) in enumerate(zip(per_u, per_p)):
    assert u.size and u.shape == p.shape, e
    np.testing.assert_allclose(p, u, atol=1e-5, rtol=0, err_msg=f"example {e}")
  np.testing.assert_allclose(loss_p, loss_u, atol=1e-5, rtol=0)
  assert [path for path, _ in grads_p] == [path for path, _ in grads_u]
  nonzero = 0
  for (path, gu), (_, gp) in zip(grads_u, grads_p):
    np.testing.assert_allclose(gp[...], gu[...], atol=1e-5, rtol=1e-5, err_msg=str(path))
    nonzero += bool(np.abs(gu[...]).max() > 0)
  assert nonzero > 3  # the gradient reaches adapters, head and LayerNorms


def test_packing_without_restarting_positions_or_block_mask_differs(models, monkeypatch):
  """The equality above depends on both per-segment positions and the block-diagonal mask."""
  model = models("hyperx")
  examples = _examples("token")
  alone = tuple((e,) for e in range(len(LENGTHS)))
  reference = _per_example(
      np.asarray(model(_batch(alone, examples, UNPACKED_S, "token", 1), "ner")), alone, "token"
  )
  packed = _batch(ROWS, examples, PACKED_S, "token", 1)

  def worst_gap():
    got = _per_example(np.asarray(model(packed, "ner")), ROWS, "token")
    return max(float(np.abs(g - r).max()) for g, r in zip(got, reference))

  assert worst_gap() <= 1e-5
  with monkeypatch.context() as m:  # positions counted along the whole row
    m.setattr(
        xlmr,
        "segment_position_ids",
        lambda seg, pad: xlmr.position_ids_from_input_ids(jnp.where(seg > 0, 5, pad), pad),
    )
    assert worst_gap() > 1e-2
  with monkeypatch.context() as m:  # attention across the whole row
    m.setattr(xlmr, "attention_mask_4d", lambda mask, seg: mask.astype(bool)[:, None, None, :])
    assert worst_gap() > 1e-2


def test_segment_positions_by_hand():
  seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(
      xlmr.segment_position_ids(seg, PAD), [[2, 3, 4, 2, 3, 2, 1, 1], [2, 3, 4, 5, 6, 7, 8, 9]]
  )


def test_pool_segments_by_hand():
  hidden = jnp.arange(2 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 1)
  seg = jnp.array([[1, 1, 2, 2, 2], [1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(
      heads.pool_segments(hidden, seg, 3, "cls")[..., 0], [[0, 2, 0], [5, 0, 0]]
  )
  np.testing.assert_allclose(
      heads.pool_segments(hidden, seg, 3, "mean")[..., 0], [[0.5, 3, 0], [6, 0, 0]]
  )


def test_packed_pair_head_needs_segment_slots():
  head = heads.SequenceClassificationHead(4, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_segments >= 1"):
    head(jnp.zeros((1, 5, 4)), segment_ids=jnp.ones((1, 5), jnp.int32))


def test_segment_ids_of_another_shape_are_refused(models):
  encoder = models("hyperx").encoder
  ids = jnp.zeros((2, 8), jnp.int32)
  with pytest.raises(ValueError, match=r"segment_ids \(2, 7\) must match input_ids \(2, 8\)"):
    encoder(ids, jnp.ones_like(ids), segment_ids=jnp.ones((2, 7), jnp.int32))
