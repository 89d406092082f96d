"""Hypernetwork, static adapters and heads against hand-computed (numpy) values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyperx_jax.models.heads import SequenceClassificationHead, TokenClassificationHead
from hyperx_jax.models.hypernet import HyperNetConfig, HyperNetwork
from hyperx_jax.models.static import StaticAdapters

from helpers import per_layer_outputs

H, B_NECK, L, T, LANGS = 12, 5, 3, 2, 4


def _randomise(module: nnx.Module, seed: int) -> None:
  """Every parameter (biases included) random, so a wrong formula cannot match by accident."""
  rng = np.random.default_rng(seed)
  for _, param in nnx.to_flat_state(nnx.state(module, nnx.Param)):
    param[...] = jnp.asarray(rng.normal(0, 0.3, param.shape), jnp.float32)


def _numpy_weights(net: HyperNetwork, task: int, lang: int, layer: int) -> dict:
  """The equations of docs/method.md in numpy for one (task, language, layer)."""
  c = net.config
  np_ = lambda p: np.asarray(p[...], np.float64)
  parts = [np_(net.task_embeddings)[task], np_(net.lang_embeddings)[lang]]
  if c.condition_on_layer:
    parts.append(np_(net.layer_embeddings)[layer])
  s = np.concatenate(parts)
  if c.use_projector:
    pr = net.projector
    s = np.maximum(s @ np_(pr["hidden_kernel"]) + np_(pr["hidden_bias"]), 0)
    s = s @ np_(pr["out_kernel"]) + np_(pr["out_bias"])
  if c.unit_projection:
    s = s / np.linalg.norm(s)
  out = {}
  for name, gen in net.generators.items():
    kernel, bias = np_(gen["kernel"]), np_(gen["bias"])
    if not c.condition_on_layer:
      kernel, bias = kernel[layer], bias[layer]
    out[name] = s @ kernel + bias
  return out


@pytest.mark.parametrize(
    "condition_on_layer,use_projector,unit_projection",
    [
        (True, True, False),
        (True, False, False),
        (False, True, False),
        (False, False, False),
        (True, True, True),
        (False, False, True),
    ],
)
def test_generated_weights_match_numpy(condition_on_layer, use_projector, unit_projection):
  config = HyperNetConfig(
      task_dim=6,
      lang_dim=5,
      layer_dim=4,
      projected_dim=7,
      bottleneck=B_NECK,
      condition_on_layer=condition_on_layer,
      use_projector=use_projector,
      unit_projection=unit_projection,
  )
  net = HyperNetwork(
      config, hidden_size=H, num_layers=L, num_tasks=T, num_languages=LANGS, rngs=nnx.Rngs(0)
  )
  _randomise(net, 1)
  task_ids, lang_ids = np.array([1, 0, 1]), np.array([3, 0, 2])
  w = net(jnp.asarray(task_ids), jnp.asarray(lang_ids))
  assert w.down.shape == (L, 3, H, B_NECK) and w.up.shape == (L, 3, B_NECK, H)
  assert w.ln_scale.shape == (L, 3, H)
  for layer in range(L):
    for g, (t, lg) in enumerate(zip(task_ids, lang_ids)):
      ref = _numpy_weights(net, t, lg, layer)
      np.testing.assert_allclose(
          w.down[layer, g], ref["down"].reshape(H, B_NECK), rtol=1e-4, atol=1e-4
      )
      np.testing.assert_allclose(w.up[layer, g], ref["up"].reshape(B_NECK, H), rtol=1e-4, atol=1e-4)
      for name in ("down_bias", "up_bias", "ln_scale", "ln_bias"):
        np.testing.assert_allclose(getattr(w, name)[layer, g], ref[name], rtol=1e-4, atol=1e-4)
  # Layers differ (layer embedding, or per-layer generators).
  assert not np.allclose(w.down[0, 0], w.down[1, 0])


def test_unit_projection_bounds_generated_weights_by_the_generators():
  """With p / ‖p‖, a projector 100x larger generates the same adapters, and a generated tensor
  is never larger than ‖K‖ + ‖g‖ (without it, it grows with the projector)."""

  def generated(unit: bool, projector_scale: float):
    net = HyperNetwork(
        HyperNetConfig(bottleneck=B_NECK, projected_dim=7, unit_projection=unit),
        hidden_size=H,
        num_layers=L,
        num_tasks=T,
        num_languages=LANGS,
        rngs=nnx.Rngs(0),
    )
    _randomise(net, 2)
    out = net.projector["out_kernel"]
    out[...] = out[...] * projector_scale
    net.projector["out_bias"][...] = net.projector["out_bias"][...] * projector_scale
    gen = net.generators["down"]
    bound = float(jnp.linalg.norm(gen["kernel"][...], 2) + jnp.linalg.norm(gen["bias"][...]))
    down = net(jnp.array([0, 1]), jnp.array([2, 3])).down  # [L, G, H, b]
    return np.asarray(down), bound

  unit, bound = generated(True, 1.0)
  np.testing.assert_allclose(generated(True, 100.0)[0], unit, rtol=1e-5, atol=1e-6)
  norms = np.linalg.norm(unit.reshape(L, 2, -1), axis=-1)
  assert norms.max() <= bound + 1e-5
  raw, _ = generated(False, 1.0)
  raw_scaled, _ = generated(False, 100.0)
  assert np.linalg.norm(raw_scaled) > 10 * np.linalg.norm(raw)


def test_layer_conditioning_shares_one_generator():
  shared = nnx.eval_shape(
      lambda: HyperNetwork(
          HyperNetConfig(bottleneck=4),
          hidden_size=8,
          num_layers=6,
          num_tasks=1,
          num_languages=1,
          rngs=nnx.Rngs(0),
      )
  )
  per_layer = nnx.eval_shape(
      lambda: HyperNetwork(
          HyperNetConfig(bottleneck=4, condition_on_layer=False),
          hidden_size=8,
          num_layers=6,
          num_tasks=1,
          num_languages=1,
          rngs=nnx.Rngs(0),
      )
  )
  assert shared.generators["down"]["kernel"].shape == (192, 32)
  assert per_layer.generators["down"]["kernel"].shape == (6, 192, 32)
  assert per_layer.projector["hidden_kernel"].shape == (128, 128)  # source [task; lang]


def test_init_statistics_and_near_identity():
  net = HyperNetwork(
      HyperNetConfig(bottleneck=16),
      hidden_size=64,
      num_layers=L,
      num_tasks=T,
      num_languages=LANGS,
      rngs=nnx.Rngs(3),
  )
  emb = np.asarray(net.task_embeddings[...])
  gen = np.asarray(net.generators["down"]["kernel"][...])
  assert abs(emb.std() - 1.0) < 0.2 and abs(gen.std() - 0.01) < 0.001
  assert not np.asarray(net.generators["down"]["bias"][...]).any()
  w = net(jnp.array([0]), jnp.array([1]))
  assert float(jnp.abs(w.ln_scale).max()) < 0.02  # generated γ ≈ 0
  z = jax.random.normal(jax.random.key(0), (2, 5, 64))
  out = per_layer_outputs(w, z)  # [L, B, S, H]
  np.testing.assert_allclose(out, np.broadcast_to(z, out.shape), atol=0.1)
  assert float(jnp.abs(out - z).mean()) < 0.02


def test_embedding_rows_set_and_errors():
  net = HyperNetwork(
      HyperNetConfig(bottleneck=4, condition_on_layer=False),
      hidden_size=8,
      num_layers=2,
      num_tasks=1,
      num_languages=3,
      rngs=nnx.Rngs(0),
  )
  net.set_embedding_row("language", 2, jnp.full((64,), 0.5))
  np.testing.assert_array_equal(net.embedding_rows("language")[...][2], np.full(64, 0.5))
  with pytest.raises(KeyError, match="known: \\['task', 'language'\\]"):
    net.embedding_rows("layer")
  with pytest.raises(IndexError):
    net.set_embedding_row("task", 1, jnp.zeros(64))


def test_logical_axes():
  net = HyperNetwork(
      HyperNetConfig(bottleneck=4, condition_on_layer=False),
      hidden_size=8,
      num_layers=2,
      num_tasks=1,
      num_languages=3,
      rngs=nnx.Rngs(0),
  )
  assert net.generators["down"]["kernel"].get_metadata()["out_sharding"] == (
      "layers",
      "hyper_in",
      "hyper_out",
  )
  assert net.lang_embeddings.get_metadata()["out_sharding"] == ("languages", None)


def test_static_adapters_gather_and_start_as_identity():
  table = StaticAdapters(3, num_layers=L, hidden_size=H, bottleneck=B_NECK, rngs=nnx.Rngs(0))
  assert table.down.shape == (3, L, H, B_NECK)
  assert not np.asarray(table.ln_scale[...]).any() and not np.asarray(table.ln_bias[...]).any()
  assert abs(float(np.asarray(table.down[...]).std()) - 0.01) < 0.002
  z = jax.random.normal(jax.random.key(1), (2, 4, H))
  out = per_layer_outputs(table(jnp.array([2])), z)  # γ = β = 0: exactly the identity
  np.testing.assert_array_equal(out, np.broadcast_to(z, out.shape))
  _randomise(table, 2)
  w = table(jnp.array([2, 0]))
  assert w.up.shape == (L, 2, B_NECK, H)
  np.testing.assert_array_equal(w.up[1, 0], table.up[...][2, 1])
  np.testing.assert_array_equal(w.ln_bias[2, 1], table.ln_bias[...][0, 2])
  no_ln = StaticAdapters(
      2, num_layers=L, hidden_size=H, bottleneck=B_NECK, layer_norm=False, rngs=nnx.Rngs(0)
  )
  assert no_ln(jnp.array([1])).ln_scale is None


def test_classification_heads_match_numpy():
  x = np.random.default_rng(0).normal(size=(2, 5, H)).astype(np.float32)
  seq = SequenceClassificationHead(H, 3, rngs=nnx.Rngs(0))
  tok = TokenClassificationHead(H, 7, rngs=nnx.Rngs(0))
  _randomise(seq, 4)
  _randomise(tok, 5)
  p = lambda v: np.asarray(v[...])
  ref = np.tanh(x[:, 0] @ p(seq.dense.kernel) + p(seq.dense.bias))
  ref = ref @ p(seq.out_proj.kernel) + p(seq.out_proj.bias)
  np.testing.assert_allclose(seq(jnp.asarray(x)), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      tok(jnp.asarray(x)), x @ p(tok.out.kernel) + p(tok.out.bias), rtol=1e-5, atol=1e-5
  )
  dropped = tok(jnp.asarray(x), dropout_rng=jax.random.key(0))
  assert not np.allclose(dropped, tok(jnp.asarray(x)))
