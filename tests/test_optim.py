"""Trainable rules, the split, the schedule, per-group learning rates and the weight-decay mask,
checked against hand-computed AdamW steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from hyperx_jax import optim
from hyperx_jax.config.sections import OptimSpec
from hyperx_jax.tree import path_str


class Tiny(nnx.Module):
  """encoder (embedding table, dense, LayerNorm), adapters (embedding + generator), heads."""

  def __init__(self, rngs: nnx.Rngs):
    self.encoder = nnx.Dict(
        embed=nnx.Embed(10, 4, rngs=rngs),
        dense=nnx.Linear(4, 4, rngs=rngs),
        ln=nnx.LayerNorm(4, rngs=rngs),
    )
    self.adapters = nnx.Dict(
        lang_embed=nnx.Embed(3, 4, rngs=rngs), generator=nnx.Linear(4, 6, rngs=rngs)
    )
    self.heads = nnx.Dict(ner=nnx.Linear(4, 2, rngs=rngs))


RULES = [("^encoder/ln/", True), ("^encoder/", False), ("^adapters/", True), ("^heads/", True)]
TRAINABLE = {
    "encoder/ln/scale",
    "encoder/ln/bias",
    "adapters/lang_embed/embedding",
    "adapters/generator/kernel",
    "adapters/generator/bias",
    "heads/ner/kernel",
    "heads/ner/bias",
}


def _spec(**overrides) -> OptimSpec:
  c = dict(lr=1e-3, warmup_steps=100, weight_decay=0.0, clip_norm=None)
  c.update(overrides)
  c["lr_multipliers"] = tuple(c.get("lr_multipliers", ()))
  return OptimSpec(**c)


def _split(model):
  return nnx.split(model, optim.trainable_filter(RULES, model)[0], ...)


def _paths(state):
  return {path_str(p) for p, _ in nnx.to_flat_state(state)}


def _flat(state):
  return {path_str(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def test_uncovered_parameter_is_an_error_listing_it():
  model = Tiny(nnx.Rngs(0))
  with pytest.raises(ValueError) as e:
    optim.trainable_filter(RULES[:3], model)
  assert "heads/ner/kernel (4, 2)" in str(e.value) and "heads/ner/bias (2,)" in str(e.value)
  assert "adapters" not in str(e.value).split("\n", 1)[1]


def test_report_counts_per_rule():
  _, report = optim.trainable_filter(RULES, Tiny(nnx.Rngs(0)))
  assert report.arrays == (2, 3, 3, 2)
  assert report.sizes == (8, 40 + 20, 12 + 30, 10)
  assert "trainable 60 of 120 parameters" in str(report)


def test_split_differentiates_only_trainable_and_frozen_stays_bitwise():
  model = Tiny(nnx.Rngs(0))
  graphdef, trainable, frozen = _split(model)
  assert _paths(trainable) == TRAINABLE
  assert _paths(frozen) == {"encoder/embed/embedding", "encoder/dense/kernel", "encoder/dense/bias"}
  frozen_before = _flat(frozen)
  trainable_before = _flat(trainable)
  tx = optim.make_optimizer(_spec(warmup_steps=0, weight_decay=0.1), 50, trainable)
  opt_state = tx.init(trainable)

  def loss_fn(trainable, frozen, ids):
    m = nnx.merge(graphdef, trainable, frozen)
    x = m.adapters["lang_embed"](ids) + m.encoder["ln"](m.encoder["dense"](m.encoder["embed"](ids)))
    return jnp.mean(jnp.square(m.heads["ner"](m.adapters["generator"](x)[:, :4]) - 1.0))

  @jax.jit
  def step(trainable, opt_state, frozen, ids):
    grads = jax.grad(loss_fn)(trainable, frozen, ids)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, grads

  for _ in range(3):
    trainable, opt_state, grads = step(trainable, opt_state, frozen, jnp.array([0, 1, 2]))
  assert _paths(grads) == TRAINABLE  # no gradient computed for frozen weights
  assert all(np.abs(g).sum() > 0 for g in _flat(grads).values())
  for path, value in _flat(frozen).items():
    np.testing.assert_array_equal(value, frozen_before[path])
  merged = nnx.merge(graphdef, trainable, frozen)
  np.testing.assert_array_equal(
      np.asarray(merged.encoder["dense"].kernel.get_value()), frozen_before["encoder/dense/kernel"]
  )
  after = _flat(trainable)
  assert all(not np.array_equal(after[p], trainable_before[p]) for p in TRAINABLE)
  # Optimiser state: one Adam (mu, nu) over the trainable leaves only.
  n_state = sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim > 0)
  assert n_state == 2 * 60


@pytest.mark.parametrize(
    "step,expected",
    [(0, 0.0), (50, 5e-4), (100, 1e-3), (350, 7.5e-4), (600, 5e-4), (1100, 0.0), (1200, 0.0)],
)
def test_schedule_warmup_then_linear_decay(step, expected):
  lr = optim.learning_rate_fn(_spec(), 1100)
  np.testing.assert_allclose(float(lr(step)), expected, rtol=1e-6, atol=1e-12)


def test_lr_multipliers_scale_each_group_by_hand():
  model = Tiny(nnx.Rngs(0))
  _, trainable, _ = _split(model)
  cfg = _spec(warmup_steps=0, lr_multipliers=[("^heads/", 100.0), ("^adapters/", 10.0)])
  tx = optim.make_optimizer(cfg, 1000, trainable)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 2.0), trainable)
  updates, _ = tx.update(grads, tx.init(trainable), trainable)
  # First Adam step: m_hat = g, v_hat = g^2 -> update = -lr * mult * g / (|g| + eps).
  one = 2.0 / (2.0 + 1e-8)
  for path, u in _flat(updates).items():
    mult = 100.0 if path.startswith("heads/") else 10.0 if path.startswith("adapters/") else 1.0
    np.testing.assert_allclose(u, np.full_like(u, -1e-3 * mult * one), rtol=2e-5)  # f32 1 - b2


def test_weight_decay_mask_spares_biases_layernorms_and_embeddings():
  model = Tiny(nnx.Rngs(0))
  _, trainable, _ = _split(model)
  mask = {
      path_str(p): bool(v.get_value()) for p, v in nnx.to_flat_state(optim.decay_mask(trainable))
  }
  assert mask == {p: p in {"adapters/generator/kernel", "heads/ner/kernel"} for p in TRAINABLE}
  cfg = _spec(warmup_steps=0, weight_decay=0.1, lr_multipliers=[("^heads/", 100.0)])
  tx = optim.make_optimizer(cfg, 1000, trainable)
  zeros = jax.tree.map(jnp.zeros_like, trainable)
  updates, _ = tx.update(zeros, tx.init(trainable), trainable)
  params = _flat(trainable)
  for path, u in _flat(updates).items():
    mult = 100.0 if path.startswith("heads/") else 1.0
    expected = -1e-3 * mult * 0.1 * params[path] if mask[path] else np.zeros_like(u)
    np.testing.assert_allclose(u, expected, rtol=1e-6, atol=1e-12)


def test_per_task_adam_state_normalises_each_task_by_its_own_gradients():
  params = {"adapters": {"w": jnp.zeros(3)}, "heads": {"h": jnp.zeros(3)}}
  big = jax.tree.map(lambda x: jnp.full_like(x, 100.0), params)
  small = jax.tree.map(lambda x: jnp.full_like(x, 0.01), params)
  # b1 = 0 isolates the second moment (no momentum carried from the other task).
  spec = _spec(warmup_steps=0, lr=1.0, b1=0.0, b2=0.999, per_task_state="^adapters/")
  tx = optim.make_optimizer(spec, 10, params, tasks=("mlm", "pairs"))
  state = tx.init(params)
  _, state = tx.update(big, state, params, task="mlm")
  updates, state = tx.update(small, state, params, task="pairs")
  lr = float(optim.learning_rate_fn(spec, 10)(1))
  # pairs' first step on its own state: g / sqrt(v_hat) = 1, the update is -lr.
  np.testing.assert_allclose(updates["adapters"]["w"], -lr, rtol=1e-4)
  # The shared state (heads) holds mlm's second moment: v_hat after two steps, by hand.
  v_hat = (0.999 * 0.001 * 100.0**2 + 0.001 * 0.01**2) / (1 - 0.999**2)
  np.testing.assert_allclose(updates["heads"]["h"], -lr * 0.01 / (np.sqrt(v_hat) + 1e-8), rtol=1e-4)
  with pytest.raises(ValueError, match="task=one of \\['mlm', 'pairs'\\]"):
    tx.update(small, state, params, task="pos")


def test_per_task_gradient_normalisation_divides_by_the_tasks_own_norm():
  params = {"adapters": {"w": jnp.zeros(4)}}
  tx = optim.normalize_per_task(("a", "b"), {"adapters": {"w": True}}, decay=0.5)
  state = tx.init(params)
  g = {"adapters": {"w": jnp.full(4, 3.0)}}  # norm 6
  out, state = tx.update(g, state, task="a")
  np.testing.assert_allclose(out["adapters"]["w"], 0.5, rtol=1e-5)  # 3 / 6 (bias-corrected)
  out, state = tx.update({"adapters": {"w": jnp.full(4, 0.5)}}, state, task="b")  # norm 1
  np.testing.assert_allclose(out["adapters"]["w"], 0.5, rtol=1e-5)
