"""The attention kernel switch: resolution by hand, today's XLA outputs on CPU, the mask forms
handed to cuDNN, splash attention (Pallas' interpreter on CPU) against XLA, and the config
errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyperx_jax.config import ConfigError, decode, environment
from hyperx_jax.models import attention, xlmr

from helpers import tiny_config

CPU = attention.Device("cpu", "cpu")
TPU = attention.Device("tpu", "TPU v5 lite")
ROCM = attention.Device("gpu", "AMD Instinct MI300X")  # no CUDA compute capability
V100 = attention.Device("gpu", "Tesla V100-SXM2-16GB", "7.0")
A100 = attention.Device("gpu", "NVIDIA A100-SXM4-80GB", "8.0")
H100 = attention.Device("gpu", "NVIDIA H100 80GB HBM3", "9.0")

RESOLVED = [  # device, dtype, head dim, max_length, packed -> what 'auto' picks
    (CPU, "bfloat16", 64, 128, False, "xla"),
    (TPU, "bfloat16", 64, 128, False, "splash"),
    (TPU, "float32", 64, 256, True, "splash"),
    (TPU, "bfloat16", 64, 48, False, "xla"),  # splash tiles the sequence in blocks of 128
    (ROCM, "bfloat16", 64, 128, False, "xla"),
    (V100, "bfloat16", 64, 128, False, "xla"),  # flash attention: Ampere and later
    (A100, "bfloat16", 64, 128, False, "cudnn"),
    (H100, "bfloat16", 64, 128, True, "cudnn"),
    (H100, "float32", 64, 128, False, "xla"),
    (H100, "bfloat16", 60, 128, False, "xla"),  # not a multiple of 8
    (A100, "bfloat16", 160, 128, False, "xla"),  # > 128 before Hopper
    (H100, "bfloat16", 160, 128, False, "cudnn"),
    (H100, "bfloat16", 264, 128, False, "xla"),  # > 256
    (H100, "bfloat16", 64, 127, True, "xla"),  # a bias trains only at even lengths
    (H100, "bfloat16", 64, 127, False, "cudnn"),  # lengths, no bias
]


@pytest.mark.parametrize("device,dtype,head_dim,max_length,packed,expected", RESOLVED)
def test_auto_resolves_by_hand(device, dtype, head_dim, max_length, packed, expected):
  shape = dict(dtype=dtype, head_dim=head_dim, max_length=max_length, packed=packed)
  assert attention.resolve("auto", device, **shape) == expected
  assert attention.resolve("xla", device, **shape) == "xla"
  fused = "splash" if device is TPU else "cudnn"
  assert attention.fused_kernel(device) == fused
  if expected == fused:
    assert attention.resolve(fused, device, **shape) == fused
  else:  # an explicit fused kernel that cannot run: an error, or xla for a restored run
    with pytest.raises(ValueError, match=f"'{fused}' cannot run here"):
      attention.resolve(fused, device, **shape)
    assert attention.resolve(fused, device, strict=False, **shape) == "xla"
  other = "cudnn" if fused == "splash" else "splash"  # the other device's kernel
  with pytest.raises(ValueError, match=f"'{other}' cannot run here"):
    attention.resolve(other, device, **shape)


def test_blockers_name_each_reason():
  assert attention.cudnn_blockers(CPU, dtype="bfloat16") == [
      "cuDNN attention needs an NVIDIA GPU; this process runs on cpu (cpu)"
  ]
  reasons = attention.cudnn_blockers(
      V100, dtype="float32", head_dim=60, max_length=127, packed=True
  )
  assert [r.split(" ")[:3] for r in reasons] == [
      ["cuDNN", "flash", "attention"],
      ["cuDNN", "attention", "takes"],
      ["cuDNN", "attention", "needs"],
      ["packed", "rows", "reach"],
  ]
  assert "has 7.0" in reasons[0] and "'float32'" in reasons[1] and "at most 128" in reasons[2]
  assert attention.splash_blockers(H100, max_length=200) == [
      "splash attention is a TPU kernel; this process runs on gpu (NVIDIA H100 80GB HBM3)",
      "splash attention tiles the sequence in blocks of 128; data.max_length is 200",
  ]
  assert attention.blockers("splash", TPU, dtype="float32", max_length=384) == []
  with pytest.raises(ValueError, match="'flash' is not one of"):
    attention.resolve("flash", H100, dtype="bfloat16", head_dim=64)


def test_this_cpu_process_has_no_cuda_device():
  device = attention.local_device()
  assert device.platform == "cpu" and device.compute_capability is None


# ------------------------------------------------------------------------------ the encoder

CONFIG = xlmr.EncoderConfig(
    vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=40
)
S = 12
LENGTHS = (9, 5, 1)
SEGMENTS = [[1] * 5 + [2] * 4 + [0] * 3, [1] * 3 + [2] * 3 + [3] * 6, [1] * 2 + [0] * 10]


def _rows():
  """(input_ids, attention_mask, segment_ids): three right-padded rows, and packed ones."""
  ids = np.random.default_rng(0).integers(3, CONFIG.vocab_size, (3, S)).astype(np.int32)
  mask = (np.arange(S)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
  segments = np.array(SEGMENTS, np.int32)
  return jnp.asarray(np.where(mask, ids, 1)), jnp.asarray(mask), jnp.asarray(segments)


def _encode(kernel, packed=False):
  encoder = xlmr.XLMREncoder(dataclasses.replace(CONFIG, attention=kernel), rngs=nnx.Rngs(0))
  ids, mask, segments = _rows()
  if packed:
    mask = (segments > 0).astype(jnp.int32)
    return np.asarray(encoder(ids, mask, segment_ids=segments)), np.asarray(mask)
  return np.asarray(encoder(ids, mask)), np.asarray(mask)


def todays_call(q, k, v, mask, implementation):  # the encoder's call before the switch
  del implementation
  return jax.nn.dot_product_attention(q, k, v, mask=mask.dense)


@pytest.mark.parametrize("packed", [False, True])
def test_xla_kernel_gives_todays_outputs(packed, monkeypatch):
  got, _ = _encode("xla", packed)
  monkeypatch.setattr(xlmr, "dot_product_attention", todays_call)
  reference, _ = _encode("xla", packed)
  np.testing.assert_array_equal(got, reference)


JAX_ATTENTION = jax.nn.dot_product_attention


def emulated_cudnn(
    q,
    k,
    v,
    bias=None,
    mask=None,
    *,
    query_seq_lengths=None,
    key_value_seq_lengths=None,
    implementation=None,
):
  """What cuDNN computes from the forms it is given, on XLA (no cuDNN on CPU): lengths mask
  the keys past each row's length (query rows past it are the caller's to ignore)."""
  assert implementation == "cudnn" and bias is None
  b, s = q.shape[:2]
  if query_seq_lengths is None:
    assert mask.shape == (b, 1, s, s) and mask.dtype == bool  # packed: the dense mask
  else:
    assert mask is None and query_seq_lengths is key_value_seq_lengths
    assert query_seq_lengths.dtype == jnp.int32 and query_seq_lengths.shape == (b,)
    mask = (jnp.arange(s)[None, :] < key_value_seq_lengths[:, None])[:, None, None, :]
  return JAX_ATTENTION(q, k, v, mask=mask, implementation="xla")


@pytest.mark.parametrize("packed", [False, True])
def test_cudnn_takes_lengths_or_the_block_mask(packed, monkeypatch):
  reference, real = _encode("xla", packed)
  monkeypatch.setattr(jax.nn, "dot_product_attention", emulated_cudnn)
  got, _ = _encode("cudnn", packed)
  np.testing.assert_allclose(got[real == 1], reference[real == 1], atol=1e-6, rtol=0)
  assert np.isfinite(got).all()


def test_row_lengths_keep_an_empty_row_attending():
  mask = jnp.array([[1, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(attention.row_lengths(mask), [3, 1])


def test_the_encoder_takes_only_resolved_kernels():
  with pytest.raises(ValueError, match=r"EncoderConfig.attention='auto' is unknown"):
    dataclasses.replace(CONFIG, attention="auto")


# ------------------------------------------------------------------------------ the config


def test_auto_on_this_cpu_is_xla(workspace):  # noqa: F811
  config = tiny_config(workspace)
  assert config.model.attention == "auto"
  assert environment.encoder_config(decode(config)).attention == "xla"


def test_config_errors_before_anything_is_built(workspace, monkeypatch):  # noqa: F811
  config = tiny_config(workspace)
  config.model.attention = "flash"
  with pytest.raises(
      ConfigError,
      match=r"config.model.attention: 'flash' is not one of "
      r"\['auto', 'xla', 'cudnn', 'splash'\]",
  ):
    environment.parse(config, 8)

  config.model.attention = "cudnn"
  with pytest.raises(ConfigError) as e:
    environment.parse(config, 8)
  assert (
      "config.model.attention: 'cudnn' cannot run here: cuDNN attention needs an NVIDIA "
      "GPU; this process runs on cpu"
  ) in str(e.value)
  assert "config.model.attention_dropout is 0.1" in str(e.value)
  with pytest.raises(ValueError, match="'cudnn' cannot run here"):
    environment.encoder_config(decode(config))  # unchecked: still refused before any build
  assert environment.encoder_config(decode(config), strict_attention=False).attention == "xla"

  monkeypatch.setattr(attention, "local_device", lambda: H100)
  with pytest.raises(ConfigError) as e:
    environment.parse(config, 8)
  assert "takes bfloat16 inputs; the compute dtype is 'float32'" in str(e.value)
  config.model.dtype = "bfloat16"
  config.model.attention_dropout = 0.0
  environment.parse(config, 8)
  assert environment.encoder_config(decode(config)).attention == "cudnn"

  config.model.attention = "splash"
  with pytest.raises(
      ConfigError,
      match="'splash' cannot run here: splash attention is a TPU "
      "kernel; this process runs on gpu",
  ):
    environment.parse(config, 8)
  monkeypatch.setattr(attention, "local_device", lambda: TPU)
  config.data.max_length = 48
  with pytest.raises(ConfigError, match="blocks of 128; data.max_length is 48"):
    environment.parse(config, 8)
  config.data.max_length = 128  # past this tiny encoder's positions: decoded, not validated
  assert environment.encoder_config(decode(config)).attention == "splash"


# ------------------------------------------------------------------ splash, interpreted on CPU

SPLASH_S = 128  # one splash block
SPLASH_SEGMENTS = np.zeros((4, SPLASH_S), np.int32)  # packed rows: 1, 2, 3 ...; 0 = padding
SPLASH_SEGMENTS[0, :50], SPLASH_SEGMENTS[0, 50:90] = 1, 2
SPLASH_SEGMENTS[1, :] = 1
SPLASH_SEGMENTS[2, :7], SPLASH_SEGMENTS[2, 7:100], SPLASH_SEGMENTS[2, 100:] = 1, 2, 3
SPLASH_SEGMENTS[3, :3] = 1  # a short row; an all-padding row is rows[...] = 0 in the eval tail


def _splash_inputs(packed: bool):
  """q, k, v [4, 128, N=4, D=32] and the two kernels' masks for the same rows."""
  q, k, v = (
      jnp.asarray(np.random.default_rng(i).normal(size=(4, SPLASH_S, 4, 32)), jnp.float32)
      for i in range(3)
  )
  segments = jnp.asarray(SPLASH_SEGMENTS if packed else (SPLASH_SEGMENTS > 0).astype(np.int32))
  mask = xlmr.attention_mask_for(
      "splash", (segments > 0).astype(jnp.int32), segments if packed else None
  )
  return q, k, v, mask, np.asarray(segments) > 0


def _attend_and_grad(kernel, q, k, v, mask, real):
  """Outputs, and the gradient w.r.t. q, k, v of their sum over real query positions."""
  attend = lambda q, k, v: attention.dot_product_attention(q, k, v, mask, kernel)
  loss = lambda q, k, v: (attend(q, k, v) * real[:, :, None, None]).sum()
  return attend(q, k, v), jax.grad(loss, (0, 1, 2))(q, k, v)


@pytest.mark.parametrize("packed", [False, True])
def test_splash_equals_xla_values_and_gradients(packed):
  q, k, v, mask, real = _splash_inputs(packed)
  assert mask.segments.dtype == jnp.int32 and mask.lengths is None
  want, want_grads = _attend_and_grad("xla", q, k, v, mask, real)
  got, got_grads = jax.jit(lambda *a: _attend_and_grad("splash", *a, mask, real))(q, k, v)
  np.testing.assert_allclose(got[real], want[real], atol=2e-6, rtol=0)
  assert np.isfinite(got).all()
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=2e-6, rtol=0)


def test_splash_under_a_mesh_runs_sharded_and_agrees():
  """Rows over 'data', heads over 'tensor': the kernel runs inside shard_map per shard."""
  q, k, v, mask, real = _splash_inputs(packed=True)
  want, _ = _attend_and_grad("xla", q, k, v, mask, real)
  mesh = jax.make_mesh(
      (2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3
  )
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))

  def step(q, k, v, segments):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return attention.dot_product_attention(q, k, v, mask._replace(segments=segments), "splash")

  lowered = jax.jit(step, in_shardings=(rows,) * 4).lower(q, k, v, mask.segments)
  assert "shard_map" in lowered.as_text() or "sdy.manual_computation" in lowered.as_text()
  got = lowered.compile()(q, k, v, mask.segments)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-6, rtol=0)


def test_encoder_with_splash_matches_xla():
  config = dataclasses.replace(CONFIG, max_positions=SPLASH_S + 2)
  ids = np.random.default_rng(0).integers(3, CONFIG.vocab_size, (4, SPLASH_S)).astype(np.int32)
  segments = jnp.asarray(SPLASH_SEGMENTS)
  mask = (segments > 0).astype(jnp.int32)
  ids = jnp.where(mask > 0, ids, 1)
  outputs = {}
  for kernel in ("xla", "splash"):
    encoder = xlmr.XLMREncoder(dataclasses.replace(config, attention=kernel), rngs=nnx.Rngs(0))
    outputs[kernel] = np.asarray(encoder(ids, mask, segment_ids=segments))
  real = np.asarray(mask) > 0
  np.testing.assert_allclose(outputs["splash"][real], outputs["xla"][real], atol=2e-5, rtol=0)
