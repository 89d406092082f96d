"""Mesh construction, logical-axis rules and sharded initialisation on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import hyperx_jax  # noqa: F401  (sets flax_always_shard_variable=False)
from hyperx_jax import sharding
from hyperx_jax.config import MeshSpec, vocabulary

RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("hyper_out", "fsdp"),
    ("hyper_out", "data"),
)


class Tiny(nnx.Module):
  """A small module with logical names on its parameters (like the encoder's)."""

  def __init__(self, rngs: nnx.Rngs):
    init = nnx.initializers.normal(1.0)
    self.embed = nnx.Param(init(rngs.params(), (16, 8)), out_sharding=("vocab", "embed"))
    self.ffn_in = nnx.Param(
        init(rngs.params(), (3, 8, 32)), out_sharding=("layers", "embed", "mlp")
    )
    self.ffn_bias = nnx.Param(jnp.zeros((3, 32)), out_sharding=("layers", "mlp"))
    self.odd = nnx.Param(init(rngs.params(), (6, 5)), out_sharding=("embed", "mlp"))
    self.gen = nnx.Param(init(rngs.params(), (4, 16)), out_sharding=("hyper_out", "hyper_out"))
    self.plain = nnx.Param(init(rngs.params(), (2,)))
    self.dropout = nnx.Dropout(0.1, rngs=nnx.Rngs(dropout=3))


def _mesh(shape):
  return sharding.make_mesh(MeshSpec(shape=shape))


EXPECTED = {
    # mesh (data, fsdp, tensor) -> parameter -> spec. Size-1 axes are kept in the spec (harmless,
    # and the spec does not change with the mesh shape); indivisible dimensions are replicated.
    (8, 1, 1): {
        "embed": P("tensor", "fsdp"),
        "ffn_in": P(None, "fsdp", "tensor"),
        "ffn_bias": P(None, "tensor"),
        "odd": P("fsdp", "tensor"),
        "gen": P("fsdp", "data"),
        "plain": P(),
    },
    (2, 4, 1): {
        "embed": P("tensor", "fsdp"),
        "ffn_in": P(None, "fsdp", "tensor"),
        "ffn_bias": P(None, "tensor"),
        "odd": P(None, "tensor"),
        "gen": P("fsdp", "data"),
        "plain": P(),
    },
    (1, 2, 4): {
        "embed": P("tensor", "fsdp"),
        "ffn_in": P(None, "fsdp", "tensor"),
        "ffn_bias": P(None, "tensor"),
        "odd": P("fsdp", None),
        "gen": P("fsdp", "data"),
        "plain": P(),
    },
}


def test_make_mesh_fills_minus_one_with_auto_axes():
  mesh = _mesh((-1, 2, 1))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_make_mesh_rejects_wrong_device_count():
  with pytest.raises(ValueError, match=r"mesh shape \(3, 2, 1\) .*cannot be laid out on 8"):
    _mesh((3, 2, 1))
  with pytest.raises(ValueError, match=r"\(-1, 3, 1\) .*cannot be laid out"):
    _mesh((-1, 3, 1))
  assert MeshSpec(shape=(-1, 2, 1)).resolve(8) == (4, 2, 1)
  assert MeshSpec(shape=(-1, -1, 1)).resolve(8) is None


def test_logical_to_mesh_spec_drops_reused_axis_and_indivisible_dims():
  mesh = _mesh((2, 4, 1))
  assert sharding.logical_to_mesh_spec(("batch", None), RULES) == P(("data", "fsdp"), None)
  # 'fsdp' is taken by batch: embed falls back to replicated.
  assert sharding.logical_to_mesh_spec(("batch", "embed"), RULES) == P(("data", "fsdp"), None)
  # 6 is not divisible by fsdp=4 -> replicated; 8 is.
  assert sharding.logical_to_mesh_spec(("embed",), RULES, shape=(6,), mesh=mesh) == P(None)
  assert sharding.logical_to_mesh_spec(("embed",), RULES, shape=(8,), mesh=mesh) == P("fsdp")
  assert sharding.logical_to_mesh_spec(("unknown", None), RULES) == P(None, None)
  with pytest.raises(ValueError, match="not in the mesh axes"):
    sharding.logical_to_mesh_spec(("embed",), [("embed", "model")], shape=(8,), mesh=mesh)


@pytest.mark.parametrize("shape", list(EXPECTED))
def test_state_shardings_and_sharded_init(shape):
  mesh = _mesh(shape)
  make = lambda: Tiny(nnx.Rngs(0))
  _, abstract_state = nnx.split(nnx.eval_shape(make))
  shardings = sharding.state_shardings(abstract_state, mesh, RULES)
  specs = {k: shardings[k].get_value().spec for k in EXPECTED[shape]}
  assert specs == EXPECTED[shape]

  model = sharding.sharded_init(make, mesh, RULES)
  reference = Tiny(nnx.Rngs(0))  # unsharded, same seed
  for name, spec in EXPECTED[shape].items():
    value = getattr(model, name).get_value()
    assert value.sharding.spec == spec, name
    assert value.sharding.mesh.shape == mesh.shape
    np.testing.assert_array_equal(
        np.asarray(value), np.asarray(getattr(reference, name).get_value())
    )
  # A sharded parameter really is split: each device holds a part.
  shard_shape = model.ffn_in.get_value().addressable_shards[0].data.shape
  assert shard_shape == (3, 8 // mesh.shape["fsdp"], 32 // mesh.shape["tensor"])
  assert model.dropout.rngs.key.get_value().sharding.spec == P()


def test_batch_sharding_and_replicated():
  mesh = _mesh((2, 4, 1))
  x = jax.device_put(np.zeros((16, 3)), sharding.batch_sharding(mesh))
  assert x.addressable_shards[0].data.shape == (2, 3)
  assert sharding.replicated(mesh).spec == P()


def test_default_rules_cover_documented_logical_names():
  names = {name for name, _ in vocabulary.DEFAULT_LOGICAL_AXIS_RULES}
  for name in (
      "vocab",
      "embed",
      "mlp",
      "heads",
      "kv",
      "layers",
      "bottleneck",
      "hyper_in",
      "hyper_out",
      "tasks",
      "languages",
      "labels",
      "batch",
  ):
    assert name in names
