"""The attention kernel switch: resolution by hand, today's XLA outputs on CPU, the mask forms
handed to cuDNN, and the config errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyperx_jax import specs, validation
from hyperx_jax.models import attention, xlmr
from hyperx_jax.validation import ConfigError
from test_train import tiny_config, workspace  # noqa: F401  (fixture)

CPU = attention.Device("cpu", "cpu")
TPU = attention.Device("tpu", "TPU v5 lite")
ROCM = attention.Device("gpu", "AMD Instinct MI300X")  # no CUDA compute capability
V100 = attention.Device("gpu", "Tesla V100-SXM2-16GB", "7.0")
A100 = attention.Device("gpu", "NVIDIA A100-SXM4-80GB", "8.0")
H100 = attention.Device("gpu", "NVIDIA H100 80GB HBM3", "9.0")

RESOLVED = [  # device, dtype, head dim, max_length, packed -> what 'auto' picks
    (CPU, "bfloat16", 64, 128, False, "xla"),
    (TPU, "bfloat16", 64, 128, False, "xla"),
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
  if expected == "cudnn":
    assert attention.resolve("cudnn", device, **shape) == "cudnn"
  else:  # an explicit cudnn that cannot run: an error, or xla for a restored run
    with pytest.raises(ValueError, match="'cudnn' cannot run here"):
      attention.resolve("cudnn", device, **shape)
    assert attention.resolve("cudnn", device, strict=False, **shape) == "xla"


def test_blockers_name_each_reason():
  assert attention.cudnn_blockers(CPU, dtype="bfloat16") == [
      "cuDNN attention needs an NVIDIA GPU; this process runs on cpu (cpu)"]
  reasons = attention.cudnn_blockers(V100, dtype="float32", head_dim=60, max_length=127,
                                     packed=True)
  assert [r.split(" ")[:3] for r in reasons] == [
      ["cuDNN", "flash", "attention"], ["cuDNN", "attention", "takes"],
      ["cuDNN", "attention", "needs"], ["packed", "rows", "reach"]]
  assert "has 7.0" in reasons[0] and "'float32'" in reasons[1] and "at most 128" in reasons[2]
  with pytest.raises(ValueError, match="'flash' is not one of"):
    attention.resolve("flash", H100, dtype="bfloat16", head_dim=64)


def test_this_cpu_process_has_no_cuda_device():
  device = attention.local_device()
  assert device.platform == "cpu" and device.compute_capability is None


# ------------------------------------------------------------------------------ the encoder

CONFIG = xlmr.EncoderConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=64, max_positions=40)
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


def emulated_cudnn(q, k, v, bias=None, mask=None, *, query_seq_lengths=None,
                   key_value_seq_lengths=None, implementation=None):
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
  assert specs.decode(config).model.encoder.attention == "xla"


def test_config_errors_before_anything_is_built(workspace, monkeypatch):  # noqa: F811
  config = tiny_config(workspace)
  config.model.attention = "flash"
  with pytest.raises(ConfigError, match=r"config.model.attention: 'flash' is not one of "
                     r"\['auto', 'xla', 'cudnn'\]"):
    validation.check_config(config, 8)

  config.model.attention = "cudnn"
  with pytest.raises(ConfigError) as e:
    validation.check_config(config, 8)
  assert ("config.model.attention: 'cudnn' cannot run here: cuDNN attention needs an NVIDIA "
          "GPU; this process runs on cpu") in str(e.value)
  assert "config.model.attention_dropout is 0.1" in str(e.value)
  with pytest.raises(ValueError, match="'cudnn' cannot run here"):
    specs.decode(config)  # a config that skipped validation: still refused before any build
  assert specs.decode(config, strict_attention=False).model.encoder.attention == "xla"

  monkeypatch.setattr(attention, "local_device", lambda: H100)
  with pytest.raises(ConfigError) as e:
    validation.check_config(config, 8)
  assert "takes bfloat16 inputs; the compute dtype is 'float32'" in str(e.value)
  config.model.dtype = "bfloat16"
  config.model.attention_dropout = 0.0
  validation.check_config(config, 8)
  assert specs.decode(config).model.encoder.attention == "cudnn"
