"""Several (task, language) groups per training batch (data.groups_per_batch): how the mixture
draws and lays them out, that a mixed batch computes what single-group batches do, and the
config checks."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyperx_jax import run
from hyperx_jax.config import ConfigError, decode, environment
from hyperx_jax.data import mixture
from hyperx_jax.models import losses

from helpers import tiny_config


def _featurize(example, rng):
  return {"x": np.array(example, np.int32), "noise": rng.integers(0, 2**30, size=2)}


def _streams(tasks=("a", "a", "a", "b"), sizes=(50, 60, 70, 80)):
  return [
      mixture.Stream(
          task=t, lang=f"l{i}", examples=list(range(1000 * i, 1000 * i + n)), featurize=_featurize
      )
      for i, (t, n) in enumerate(zip(tasks, sizes))
  ]


def _mix(**kw):
  kw = {"global_batch_size": 6, "seed": 3, "weights": [0.5, 0.3, 0.2, 1.0], **kw}
  return mixture.MixtureIterator(_streams(), **kw)


def test_one_group_is_the_single_pair_draw_bit_for_bit():
  one, default = _mix(groups_per_batch=1), _mix()
  for _ in range(20):
    a, b = next(one), next(default)
    assert (a.stream_id, a.stream_ids) == (b.stream_id, (b.stream_id,))
    for k in a.features:
      np.testing.assert_array_equal(a.features[k], b.features[k])


def test_groups_are_blocks_of_one_task_without_replacement():
  mix = _mix(groups_per_batch=2)
  for _ in range(40):
    batch = next(mix)
    first, *others = batch.stream_ids
    x = batch.features["x"] // 1000  # the stream of each row
    if first == 3:  # task b has one stream: one group
      assert others == [] and (x == 3).all()
      continue
    (other,) = others
    assert other != first and other in (0, 1, 2)
    assert (x[:3] == first).all() and (x[3:] == other).all()


def test_companions_follow_the_rates_of_the_other_streams():
  """Given the first group is stream 0, the companion is 1 with 0.3 / (0.3 + 0.2) = 0.6."""
  rates = np.array([0.5, 0.3, 0.2, 1.0])
  drawn = collections.Counter(
      mixture.draw_companions(0, [0, 1, 2], rates, 1, seed=3, step=s)[0] for s in range(4000)
  )
  assert abs(drawn[1] / 4000 - 0.6) < 0.03 and set(drawn) == {1, 2}
  three = mixture.draw_companions(0, [0, 1, 2], rates, 2, seed=3, step=5)
  assert sorted(three) == [1, 2]


def test_state_resumes_and_hosts_split_the_rows():
  mix = _mix(groups_per_batch=2)
  for _ in range(7):
    next(mix)
  state = mix.get_state()
  assert "batches" in state
  want = [next(mix) for _ in range(5)]
  again = _mix(groups_per_batch=2)
  again.set_state(state)
  got = [next(again) for _ in range(5)]
  for g, w in zip(got, want):
    assert g.stream_ids == w.stream_ids
    np.testing.assert_array_equal(g.features["x"], w.features["x"])
  hosts = [_mix(groups_per_batch=2, process_index=p, process_count=2) for p in (0, 1)]
  single = _mix(groups_per_batch=2)
  for _ in range(6):
    whole = next(single).features["x"]
    parts = [next(h).features["x"] for h in hosts]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match="groups_per_batch changed"):
    _mix().set_state(state)


@pytest.fixture(scope="module")
def tiny_model(workspace):
  config = tiny_config(workspace, tasks="pair")
  spec = decode(config)
  mesh = jax.make_mesh(
      (1, 1, 1),
      ("data", "fsdp", "tensor"),
      devices=jax.devices()[:1],
      axis_types=(jax.sharding.AxisType.Auto,) * 3,
  )
  parts, _ = run.create_model(spec, mesh)
  model = parts.merge()
  # Non-trivial adapters: the generators' outputs differ per language.
  for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    if path[0] == "adapters":
      key = jax.random.key(hash(path) % 2**31)
      value.set_value(value.get_value() + 0.05 * jax.random.normal(key, value.get_value().shape))
  return model


def _batch(model, lang_ids, seed=0):
  rng = np.random.default_rng(seed)
  b, s = len(lang_ids), 12
  ids = rng.integers(5, 90, (b, s)).astype(np.int32)
  return {
      "input_ids": jnp.asarray(ids),
      "attention_mask": jnp.ones((b, s), jnp.int32),
      "token_type_ids": jnp.zeros((b, s), jnp.int32),
      "labels": jnp.asarray(rng.integers(0, 2, b).astype(np.int32)),
      "task_id": jnp.full((b,), model.task_id("pair"), jnp.int32),
      "lang_id": jnp.asarray(np.asarray(lang_ids, np.int32)),
      "example_mask": jnp.ones((b,), jnp.int32),
  }


def test_a_mixed_batch_computes_what_single_group_batches_do(tiny_model):
  """Logits per example, and the loss gradient: the mixed batch's mean over all its examples
  is the example-weighted mean of the two single-group batches' (fp32, <= 1e-5)."""
  model = tiny_model
  aa, bb = model.lang_id("aa"), model.lang_id("bb")
  mixed = _batch(model, [aa] * 4 + [bb] * 4)
  half = lambda batch, rows: {k: v[rows] for k, v in batch.items()}
  first, second = half(mixed, slice(0, 4)), half(mixed, slice(4, 8))
  together = model(mixed, "pair", groups=2)
  np.testing.assert_allclose(together[:4], model(first, "pair"), atol=1e-5, rtol=0)
  np.testing.assert_allclose(together[4:], model(second, "pair"), atol=1e-5, rtol=0)
  assert (
      float(jnp.abs(together[4:] - model(dict(second, lang_id=first["lang_id"]), "pair")).max())
      > 1e-5
  )  # the language matters

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p, batch, groups):
    return losses.compute_loss(nnx.merge(graphdef, p, rest), batch, "pair", groups=groups)[0]

  g_mixed = jax.grad(loss)(params, mixed, 2)
  g_first, g_second = jax.grad(loss)(params, first, 1), jax.grad(loss)(params, second, 1)
  combined = jax.tree.map(lambda a, b: (a + b) / 2, g_first, g_second)  # 4 examples each
  for a, b in zip(jax.tree.leaves(g_mixed), jax.tree.leaves(combined)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_config_checks_groups(workspace):
  config = tiny_config(workspace, tasks="tag+pair", batch=8)
  config.data.groups_per_batch = 3  # the pair task has 2 streams: G = 2 there, 1 for tag
  spec = environment.parse(config, 8)
  assert (spec.groups_of("pair"), spec.groups_of("tag")) == (2, 1)
  config.data.groups_per_batch = 0
  with pytest.raises(ConfigError, match="groups_per_batch: must be an int > 0"):
    environment.parse(config, 8)
  odd = tiny_config(workspace, tasks="pair", batch=6, mesh="1+1+1")
  odd.data.groups_per_batch = 4  # 2 streams -> 2 groups of 3
  assert environment.parse(odd, 1).groups_of("pair") == 2
  odd.data.batch_size = odd.data.eval_batch_size = 5
  with pytest.raises(
      ConfigError,
      match="task 'pair' trains 2 groups per batch, which do not split batch_size = 5",
  ):
    environment.parse(odd, 1)
