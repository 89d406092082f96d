"""Checkpoints: sharded round trip on 8 devices, JSON data state, keep-N, best-by-metric,
an unreadable step refused / fallen back over / moved aside, init_from with new language rows,
SIGTERM flag."""

import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import hyperx_jax  # noqa: F401
from hyperx_jax import checkpoint, optim, run, sharding
from hyperx_jax.config import MeshSpec
from hyperx_jax.config.sections import OptimSpec

RULES = (("embed", "fsdp"), ("mlp", "tensor"), ("languages", None))


class Tiny(nnx.Module):

  def __init__(self, rngs: nnx.Rngs, n_langs: int = 3):
    init = nnx.initializers.normal(1.0)
    self.lang = nnx.Param(init(rngs.params(), (n_langs, 8)), out_sharding=("languages", "embed"))
    self.kernel = nnx.Param(init(rngs.params(), (8, 16)), out_sharding=("embed", "mlp"))
    self.bias = nnx.Param(jnp.zeros((16,)), out_sharding=("mlp",))


def _setup(n_langs=3, seed=0):
  mesh = sharding.make_mesh(MeshSpec(shape=(2, 2, 2)))
  model = sharding.sharded_init(lambda: Tiny(nnx.Rngs(seed), n_langs), mesh, RULES)
  _, trainable = nnx.split(model, nnx.Param)
  tx = optim.make_optimizer(OptimSpec(lr=1e-2, warmup_steps=0), 100, trainable)
  opt_state = jax.jit(tx.init)(trainable)
  grads = jax.tree.map(lambda x: jnp.ones_like(x) * 0.5, trainable)
  updates, opt_state = tx.update(grads, opt_state, trainable)
  trainable = jax.tree.map(lambda p, u: p + u, trainable, updates)
  return mesh, trainable, opt_state


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _assert_equal_trees(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sharded_round_trip_bitwise(tmp_path):
  mesh, trainable, opt_state = _setup()
  rng = jax.random.key(7)
  data_state = {"sampler": {"step": 12, "counts": [3, 9]}, "epoch": {"en/ner": 1}}
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, async_save=True)
  assert ckpt.save(5, trainable=trainable, opt_state=opt_state, rng=rng, data_state=data_state)
  ckpt.wait()
  # Saving the same step again (preemption right after a periodic save) is a no-op.
  assert not ckpt.save(5, trainable=trainable, opt_state=opt_state, force=True)
  ckpt.close()

  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  assert ckpt.latest_step() == 5
  out = ckpt.restore(
      abstract_trainable=_abstract(trainable), abstract_opt_state=_abstract(opt_state)
  )
  ckpt.close()
  assert out["step"] == 5 and out["data_state"] == data_state
  _assert_equal_trees(out["trainable"], trainable)
  _assert_equal_trees(out["opt_state"], opt_state)
  assert isinstance(out["trainable"], nnx.State)
  kernel = out["trainable"]["kernel"].get_value()
  assert kernel.sharding == NamedSharding(mesh, P("fsdp", "tensor"))
  assert kernel.addressable_shards[0].data.shape == (4, 8)
  np.testing.assert_array_equal(jax.random.key_data(out["rng"]), jax.random.key_data(rng))
  np.testing.assert_array_equal(jax.random.normal(out["rng"], (3,)), jax.random.normal(rng, (3,)))


def test_keep_n_and_best_metric(tmp_path):
  _, trainable, opt_state = _setup()
  ckpt = checkpoint.Checkpointer(
      str(tmp_path), keep=2, async_save=False, best_metric="xnli:en/accuracy", best_mode="max"
  )
  scores = {1: 0.5, 2: 0.9, 3: 0.6, 4: None, 5: 0.7}
  for step, score in scores.items():
    metrics = None if score is None else {"xnli:en/accuracy": score, "loss": 1.0}
    ckpt.save(step, trainable=trainable, opt_state=opt_state, metrics=metrics)
  ckpt.wait()
  assert ckpt.all_steps() == [2, 4, 5]  # the best (2) and the latest two
  assert ckpt.best_step() == 2
  ckpt.close()

  plain = checkpoint.Checkpointer(str(tmp_path / "plain"), keep=2, async_save=False)
  for step in range(1, 6):
    plain.save(step, trainable=trainable, opt_state=opt_state)
  assert plain.all_steps() == [4, 5]
  plain.close()


def _two_steps(tmp_path):
  """Steps 1 and 2 (trainable + step), then step 2 loses an item (an interrupted copy) and an
  orbax temp dir of an interrupted save of step 3 is left."""
  _, trainable, opt_state = _setup()
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  for step in (1, 2):
    bumped = jax.tree.map(lambda x: x + step, trainable)
    ckpt.save(step, trainable=bumped, opt_state=opt_state, data_state={"step": step})
  ckpt.close()
  shutil.rmtree(os.path.join(tmp_path, "checkpoints", "2", "opt_state"))
  os.makedirs(os.path.join(tmp_path, "checkpoints", "3.orbax-checkpoint-tmp-1234", "trainable"))
  return _abstract(trainable), _abstract(opt_state), trainable


def test_unreadable_step_is_refused_without_fallback(tmp_path):
  trainable, opt_state, _ = _two_steps(tmp_path)
  ckpt = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  for step in (None, 2):
    with pytest.raises(
        checkpoint.UnreadableCheckpointError, match="(?s)step 2 .* is unreadable.*allow_fallback"
    ):
      ckpt.restore(step, abstract_trainable=trainable, abstract_opt_state=opt_state)
  with pytest.warns(RuntimeWarning, match="step 2 .* unreadable .*; using step 1"):
    out = ckpt.restore(
        abstract_trainable=trainable, abstract_opt_state=opt_state, allow_fallback=True
    )
  ckpt.close()
  assert out["step"] == 1
  assert sorted(os.listdir(tmp_path / "checkpoints"))[:2] == ["1", "2"]  # read-only: kept


def test_fallback_moves_the_unreadable_step_aside_and_it_is_saved_again(tmp_path):
  trainable, opt_state, values = _two_steps(tmp_path)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)
  with pytest.warns(
      RuntimeWarning, match="step 2 .* unreadable .*moved to .*corrupt/2-.*; using step 1"
  ):
    out = ckpt.restore(
        abstract_trainable=trainable, abstract_opt_state=opt_state, allow_fallback=True
    )
  assert out["step"] == 1 and out["data_state"] == {"step": 1}
  _assert_equal_trees(out["trainable"], jax.tree.map(lambda x: x + 1, values))
  assert ckpt.all_steps() == [1]
  (moved,) = os.listdir(tmp_path / "checkpoints" / "corrupt")
  assert moved.startswith("2-")
  assert os.path.isdir(tmp_path / "checkpoints" / "corrupt" / moved / "trainable")
  assert not os.path.exists(tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1234")
  assert ckpt.save(2, trainable=values, opt_state=out["opt_state"], data_state={"step": 2})
  assert ckpt.all_steps() == [1, 2]
  again = ckpt.restore(abstract_trainable=trainable, abstract_opt_state=opt_state)
  ckpt.close()
  assert again["step"] == 2


def test_a_step_the_check_rejects_is_unreadable_and_nothing_readable_moves_nothing(tmp_path):
  trainable, opt_state, _ = _two_steps(tmp_path)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False)

  def only_step_2(restored):
    if restored["data_state"] != {"step": 2}:
      raise ValueError(f"data state {restored['data_state']} rejected")

  with pytest.raises(
      checkpoint.UnreadableCheckpointError,
      match="(?s)no readable checkpoint .*nothing was moved.*step 2: .*"
      "step 1: ValueError: data state",
  ):
    ckpt.restore(
        abstract_trainable=trainable,
        abstract_opt_state=opt_state,
        allow_fallback=True,
        check=only_step_2,
    )
  ckpt.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_init_from_takes_saved_values_and_keeps_new_language_rows(tmp_path):
  _, trainable, opt_state = _setup(n_langs=3, seed=0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False)
  ckpt.save(9, trainable=trainable, opt_state=opt_state)
  ckpt.close()
  _, fresh, _ = _setup(n_langs=4, seed=1)
  saved = checkpoint.Checkpointer(str(tmp_path), read_only=True, async_save=False).restore(
      abstract_trainable=trainable
  )["trainable"]
  new, report = run.merge_trainable(fresh, nnx.to_pure_dict(saved))
  old_lang = np.asarray(trainable["lang"].get_value())
  new_lang = np.asarray(new["lang"].get_value())
  np.testing.assert_array_equal(new_lang[:3], old_lang)
  np.testing.assert_array_equal(new_lang[3], np.asarray(fresh["lang"].get_value())[3])
  np.testing.assert_array_equal(
      np.asarray(new["kernel"].get_value()), np.asarray(trainable["kernel"].get_value())
  )
  assert new["kernel"].get_value().sharding == fresh["kernel"].get_value().sharding
  assert any("lang: run (3, 8) -> model (4, 8)" in line for line in report)

  _, wrong, _ = _setup(n_langs=3)
  wrong["kernel"].set_value(jnp.zeros((8, 8)))
  with pytest.raises(ValueError, match="kernel: run \\(8, 16\\) vs model \\(8, 8\\)"):
    run.merge_trainable(wrong, nnx.to_pure_dict(saved))


def test_sigterm_sets_the_flag():
  previous = signal.getsignal(signal.SIGTERM)
  is_requested = checkpoint.install_preemption_handler()
  try:
    assert not is_requested()
    os.kill(os.getpid(), signal.SIGTERM)
    assert is_requested()
  finally:
    is_requested.uninstall()
  assert signal.getsignal(signal.SIGTERM) is previous
