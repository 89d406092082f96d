"""The train step gives the same loss and update on 1 device and on 8-device meshes
(data, data x fsdp, data x tensor): sharding changes placement, not numbers."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

from hyperx_jax import optim, run, train
from hyperx_jax.config import decode
from hyperx_jax.data import pipeline
from hyperx_jax.tokenizer import load_tokenizer
from hyperx_jax.tree import path_str

from helpers import tiny_config

AXES = ("data", "fsdp", "tensor")
STEPS = 2


def mesh_of(shape: tuple[int, ...]) -> Mesh:
  n = int(np.prod(shape))
  devices = np.asarray(jax.devices()[:n]).reshape(shape)
  return Mesh(devices, AXES, axis_types=(AxisType.Auto,) * 3)


def run_steps(config, mesh: Mesh, batches) -> tuple[list[float], dict[str, np.ndarray]]:
  """STEPS train steps on `mesh`; returns the losses and the final trainable params."""
  spec = decode(config)
  parts, _ = run.create_model(spec, mesh)
  tx = optim.make_optimizer(spec.optim, spec.total_steps, parts.trainable)
  opt_state = train.init_optimizer(tx, parts.trainable, mesh)
  step_fn = train.make_train_step(
      parts.graphdef,
      tx,
      (
          run.shardings_of(parts.trainable),
          run.shardings_of(opt_state),
          run.shardings_of(parts.frozen),
      ),
      mesh,
  )
  trainable, rng, losses = parts.trainable, jax.random.key(spec.seed), []
  for i, local in enumerate(batches):
    batch = train.global_batch(local, mesh)
    trainable, opt_state, metrics = step_fn(
        trainable, opt_state, parts.frozen, batch, np.int32(i), rng, local.task
    )
    losses.append(float(metrics["loss"]))
  params = {
      path_str(p): np.asarray(v.get_value())
      for p, v in jax.tree_util.tree_flatten_with_path(
          trainable, is_leaf=lambda x: hasattr(x, "get_value")
      )[0]
  }
  return losses, params


@pytest.fixture(scope="module")
def setup(workspace):  # noqa: F811
  config = tiny_config(workspace, tasks="tag", steps=10)
  tok = load_tokenizer(config.tokenizer)
  spec = decode(config)
  it = pipeline.build_train_pipeline(spec.train_streams, spec.data, spec.seed, tok)
  batches = [next(it) for _ in range(STEPS)]
  reference = run_steps(config, mesh_of((1, 1, 1)), batches)
  return config, batches, reference


@pytest.mark.parametrize(
    "shape", [(8, 1, 1), (2, 4, 1), (2, 1, 4)], ids=["data8", "data2_fsdp4", "data2_tensor4"]
)
def test_same_loss_and_update_as_one_device(setup, shape):
  config, batches, (ref_losses, ref_params) = setup
  losses, params = run_steps(config, mesh_of(shape), batches)
  np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5)
  assert params.keys() == ref_params.keys()
  for name, value in params.items():
    np.testing.assert_allclose(value, ref_params[name], rtol=0, atol=1e-5, err_msg=name)
