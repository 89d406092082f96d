"""XLM-R encoder: parity with transformers' PyTorch XLM-R, adapters, dropout, remat, dtypes."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax import ad_checkpoint

from hyperx_jax.models import layers, weights, xlmr
from hyperx_jax.models.adapters import AdapterWeights

import hf_fixtures

VOCAB = 100


def ragged_batch(seed=0, lengths=(11, 7, 4), seq=11, pair=False):
  """<s> ... </s> rows padded with 1 to `seq`; token types 1 on the second half when `pair`."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, VOCAB, (len(lengths), seq))
  mask = np.zeros_like(ids)
  ids[:, 0] = 0
  for b, n in enumerate(lengths):
    ids[b, n - 1] = 2
    ids[b, n:] = 1
    mask[b, :n] = 1
  types = np.zeros_like(ids)
  if pair:
    types[:, seq // 2 :] = 1
  return ids, mask, types


def torch_hidden(model, ids, mask, types):
  body = getattr(model, "roberta", model)
  with torch.no_grad():
    out = body(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        token_type_ids=torch.tensor(types),
    )
  return out.last_hidden_state.numpy()


@jax.jit
def forward(enc, ids, mask, types, rng=None, adapters=(), group_ids=None):
  return enc(ids, mask, types, dropout_rng=rng, adapters=adapters, group_ids=group_ids)


def load(path, **overrides):
  enc = xlmr.XLMREncoder(
      weights.encoder_config_from_checkpoint(path, **overrides), rngs=nnx.Rngs(0)
  )
  weights.load_encoder_weights(enc, path)
  return enc


CASES = {
    "model": dict(),
    "mlm_e5like": dict(mlm=True, layer_norm_eps=1e-12, type_vocab_size=2),
    "xl_pre_ln": dict(xl=True),
}


@pytest.fixture(scope="module", params=list(CASES))
def checkpoint(request, tmp_path_factory):
  kw = CASES[request.param]
  path = hf_fixtures.make_tiny_xlmr_checkpoint(tmp_path_factory.mktemp(request.param), **kw)
  model = hf_fixtures.load_torch_model(path, mlm=kw.get("mlm", False), xl=kw.get("xl", False))
  return path, model, kw


@pytest.mark.parametrize("scan", [True, False])
def test_parity_with_transformers(checkpoint, scan):
  path, model, kw = checkpoint
  ids, mask, types = ragged_batch(pair=kw.get("type_vocab_size", 1) == 2)
  ref = torch_hidden(model, ids, mask, types)
  enc = load(path, scan_layers=scan)
  assert enc.config.layer_norm_eps == kw.get("layer_norm_eps", 1e-5)
  assert enc.config.pre_layer_norm == kw.get("xl", False)
  out = np.asarray(forward(enc, ids, mask, types))
  assert out.shape == ref.shape
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_position_ids_match_transformers():
  from transformers.models.xlm_roberta import modeling_xlm_roberta as hf

  ids, _, _ = ragged_batch(lengths=(11, 3, 1))
  ids[0, 4] = 1  # a pad inside the sequence keeps position pad_id
  want = hf.XLMRobertaEmbeddings.create_position_ids_from_input_ids(torch.tensor(ids), 1)
  got = xlmr.position_ids_from_input_ids(jnp.asarray(ids), 1)
  np.testing.assert_array_equal(np.asarray(got), want.numpy())


def random_adapter(layers, groups, hidden, bottleneck, seed, ln=False):
  k = jax.random.split(jax.random.key(seed), 6)
  n = lambda key, *shape: 0.3 * jax.random.normal(key, (layers, groups, *shape))
  return AdapterWeights(
      n(k[0], hidden, bottleneck),
      n(k[1], bottleneck),
      n(k[2], bottleneck, hidden),
      n(k[3], hidden),
      1.0 + n(k[4], hidden) if ln else None,
      n(k[5], hidden) if ln else None,
  )


def torch_adapter(w, layer, group_ids, z, eps=1e-5):
  """A(z) = LN(U relu(D z + bD) + bU) + z with each example's group, in torch."""
  g = torch.tensor(np.asarray(group_ids))
  t = lambda x: torch.tensor(np.asarray(x[layer]))[g]  # [B, ...]
  out = (
      torch.einsum(
          "bsk,bkh->bsh",
          torch.relu(torch.einsum("bsh,bhk->bsk", z, t(w.down)) + t(w.down_bias)[:, None]),
          t(w.up),
      )
      + t(w.up_bias)[:, None]
  )
  if w.ln_scale is not None:
    out = torch.nn.functional.layer_norm(out, out.shape[-1:], eps=eps)
    out = out * t(w.ln_scale)[:, None] + t(w.ln_bias)[:, None]
  return out + z


@pytest.mark.parametrize(
    "placement,module,scan", [("ffn_output", "dense", True), ("layer_output", None, False)]
)
def test_adapters_match_hooked_transformers(checkpoint, placement, module, scan):
  """The adapter sits where docs/method.md says: LN(adapter(dense(ffn)) + attn_out), or after the
  layer output; checked against torch XLM-R with the adapter inserted by forward hooks."""
  path, model, _ = checkpoint
  cfg = model.config
  ids, mask, types = ragged_batch()
  group_ids = np.array([1, 0, 1])
  stack = (
      random_adapter(cfg.num_hidden_layers, 2, cfg.hidden_size, 8, 1),
      random_adapter(cfg.num_hidden_layers, 2, cfg.hidden_size, 8, 2, ln=True),
  )
  body = getattr(model, "roberta", model)
  hooks = []
  for i, layer in enumerate(body.encoder.layer):
    target = layer.output.dense if module == "dense" else layer.output

    def hook(mod, args, out, i=i):
      for w in stack:
        out = torch_adapter(w, i, group_ids, out)
      return out

    hooks.append(target.register_forward_hook(hook))
  try:
    ref = torch_hidden(model, ids, mask, types)
  finally:
    for h in hooks:
      h.remove()
  enc = load(path, scan_layers=scan, adapter_placement=placement)
  out = forward(enc, ids, mask, types, adapters=stack, group_ids=group_ids)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=0)
  plain = forward(enc, ids, mask, types)
  assert np.abs(np.asarray(plain) - ref).max() > 1e-2  # the adapters did change the output


@pytest.fixture(scope="module")
def tiny():
  cfg = xlmr.EncoderConfig(
      vocab_size=VOCAB,
      hidden_size=32,
      num_layers=3,
      num_heads=4,
      intermediate_size=64,
      max_positions=40,
  )
  ids, mask, types = ragged_batch()
  return cfg, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


def make(cfg, **overrides):
  return xlmr.XLMREncoder(xlmr.EncoderConfig(**{**cfg.__dict__, **overrides}), rngs=nnx.Rngs(3))


def test_dropout_scan_and_unrolled_agree(tiny):
  cfg, ids, mask, types = tiny
  key = jax.random.key(7)
  enc = make(cfg)
  scanned = forward(enc, ids, mask, types, key)
  unrolled = forward(make(cfg, scan_layers=False), ids, mask, types, key)
  np.testing.assert_allclose(np.asarray(scanned), np.asarray(unrolled), atol=1e-5)
  clean = forward(enc, ids, mask, types)
  other = forward(enc, ids, mask, types, jax.random.key(8))
  assert np.abs(np.asarray(scanned - clean)).max() > 1e-2
  assert np.abs(np.asarray(scanned - other)).max() > 1e-2
  np.testing.assert_array_equal(np.asarray(clean), np.asarray(forward(enc, ids, mask, types)))


def test_padding_does_not_leak(tiny):
  """Real tokens' states do not depend on what the padding holds."""
  cfg, ids, mask, types = tiny
  enc = make(cfg)
  noisy = jnp.where(mask == 1, ids, 50)  # pads replaced by a real id, still masked out
  a, b = forward(enc, ids, mask, types), forward(enc, noisy, mask, types)
  keep = np.asarray(mask, bool)
  # position ids change for non-pad ids, so compare only the full-length row's real tokens
  np.testing.assert_allclose(np.asarray(a)[0][keep[0]], np.asarray(b)[0][keep[0]], atol=1e-6)
  short = jnp.asarray(ids)[2:, :4], jnp.asarray(mask)[2:, :4], jnp.asarray(types)[2:, :4]
  np.testing.assert_allclose(np.asarray(forward(enc, *short))[0], np.asarray(a)[2, :4], atol=1e-5)


def test_remat_same_values_and_grads(tiny):
  cfg, ids, mask, types = tiny

  def loss_and_grad(enc):
    graphdef, params, rest = nnx.split(enc, nnx.Param, ...)

    def loss(p):
      out = nnx.merge(graphdef, p, rest)(ids, mask, types)
      return jnp.sum(jnp.sin(out))

    return jax.jit(jax.value_and_grad(loss))(params)

  l0, g0 = loss_and_grad(make(cfg))
  assert float(jnp.abs(g0["layers"]["attention_ln"]["scale"]).sum()) > 0
  for remat in ("full", "dots"):
    l1, g1 = loss_and_grad(make(cfg, remat=remat))
    np.testing.assert_allclose(l0, l1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), g0, g1)


def saved_residuals(capsys, f, *args) -> list[str]:
  """What autodiff keeps from f's forward pass for its backward pass, one line per array."""
  ad_checkpoint.print_saved_residuals(f, *args)
  return capsys.readouterr().out.splitlines()


def test_gelu_keeps_only_its_input_for_the_backward_pass(capsys):
  x = jnp.linspace(-4.0, 4.0, 24).reshape(2, 3, 4)
  np.testing.assert_array_equal(layers.gelu(x), jax.nn.gelu(x, approximate=False))
  np.testing.assert_allclose(
      jax.grad(lambda x: layers.gelu(x).sum())(x),
      jax.grad(lambda x: jax.nn.gelu(x, approximate=False).sum())(x),
      rtol=1e-6,
  )
  w = jnp.ones((4, 5))  # the frozen FFN output dense: its gradient needs no residual

  def activation_sized(act):
    lines = saved_residuals(capsys, lambda x: (act(x) @ w).sum(), x)
    return [line for line in lines if line.startswith("f32[2,3,4]")]

  assert len(activation_sized(lambda x: jax.nn.gelu(x, approximate=False))) == 3  # x·, erfc, exp
  assert activation_sized(layers.gelu) == ["f32[2,3,4] from the argument x"]


def test_attention_probabilities_are_kept_once_for_the_backward_pass(capsys):
  rng = np.random.RandomState(0)
  logits, v = jnp.asarray(rng.randn(2, 3, 5, 5)), jnp.asarray(rng.randn(2, 5, 3, 4))  # [B,N,S,S]
  keep = layers.keep_mask(jax.random.key(0), 0.3, logits.shape)
  g = jnp.asarray(rng.randn(2, 5, 3, 4))

  def attend(softmax, attend_dropped_out):
    return lambda logits, v: jnp.sum(g * attend_dropped_out(softmax(logits), keep, v, 0.3))

  def plain_dropout_then_einsum(probs, keep, v, rate):
    return jnp.einsum("bnqk,bknd->bqnd", layers.apply_keep_mask(probs, keep, rate), v)

  plain = attend(lambda x: jax.nn.softmax(x, axis=-1), plain_dropout_then_einsum)
  ours = attend(layers.softmax, xlmr.attend_dropped_out)
  np.testing.assert_array_equal(layers.softmax(logits), jax.nn.softmax(logits, axis=-1))
  np.testing.assert_allclose(ours(logits, v), plain(logits, v), rtol=1e-6)
  for a, b in zip(jax.grad(ours, (0, 1))(logits, v), jax.grad(plain, (0, 1))(logits, v)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  probs_sized = lambda f: [
      line.split(" ")[0]
      for line in saved_residuals(capsys, f, logits, v)
      if line.startswith(("f32[2,3,5,5]", "bool[2,3,5,5]"))
  ]
  assert sorted(probs_sized(plain)) == ["bool[2,3,5,5]"] + ["f32[2,3,5,5]"] * 3, probs_sized(plain)
  assert sorted(probs_sized(ours)) == ["bool[2,3,5,5]", "f32[2,3,5,5]"]  # probabilities, mask


def test_bf16_compute_close_to_fp32(tiny):
  cfg, ids, mask, types = tiny
  ref = forward(make(cfg), ids, mask, types)
  fp32_params = nnx.state(make(cfg), nnx.Param)
  for overrides in (dict(dtype="bfloat16"), dict(dtype="bfloat16", param_dtype="bfloat16")):
    enc = make(cfg, **overrides)  # same seed; bf16 params are the fp32 ones rounded
    nnx.update(
        enc, jax.tree.map(lambda x: x.astype(overrides.get("param_dtype", "float32")), fp32_params)
    )
    out = forward(enc, ids, mask, types)
    assert out.dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(out, np.float32)).all()
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=0.15)


LN_REGEX = re.compile(r"(^|/)([a-z_]*ln)/")


def test_param_paths_and_logical_axes(tiny):
  cfg, *_ = tiny
  enc = make(cfg)
  flat = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(enc, nnx.Param))}
  assert set(flat) == set(weights.PARAM_MAP)
  lns = sorted(p for p in flat if LN_REGEX.search(p))
  assert lns == [
      "embeddings/ln/bias",
      "embeddings/ln/scale",
      "layers/attention_ln/bias",
      "layers/attention_ln/scale",
      "layers/output_ln/bias",
      "layers/output_ln/scale",
  ]
  assert enc.embeddings.word.shape == (cfg.vocab_size, cfg.hidden_size)
  for path, var in flat.items():
    axes = var.get_metadata()["out_sharding"]
    assert len(axes) == var.ndim, path
    assert (axes[0] == "layers") == path.startswith("layers/"), path
  assert flat["layers/attention/query/kernel"].get_metadata()["out_sharding"] == (
      "layers",
      "embed",
      "heads",
      "kv",
  )
  pre_ln = nnx.eval_shape(lambda: make(cfg, pre_layer_norm=True))
  paths = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(pre_ln, nnx.Param))}
  assert paths == set(weights.PRE_LN_PARAM_MAP)
  assert sorted(p for p in paths if LN_REGEX.search(p)) == [
      "final_ln/bias",
      "final_ln/scale",
      "layers/attention_ln/bias",
      "layers/attention_ln/scale",
      "layers/output_ln/bias",
      "layers/output_ln/scale",
  ]


def hand_count(v, h, layers, f, positions=514, types=1):
  embeddings = (v + positions + types) * h + 2 * h
  layer = 4 * (h * h + h) + 2 * (h * f) + f + h + 4 * h
  return embeddings + layers * layer


@pytest.mark.parametrize(
    "name,v,h,layers,f",
    [
        ("base", 250002, 768, 12, 3072),
        ("large", 250002, 1024, 24, 4096),
        ("xl", 250880, 2560, 36, 10240),
        ("xxl", 250880, 4096, 48, 16384),
    ],
)
def test_preset_parameter_counts(name, v, h, layers, f):
  n = xlmr.count_params(xlmr.EncoderConfig.preset(name))
  assert n == hand_count(v, h, layers, f)
  if name == "base":  # XLM-R base: 278,043,648 with its 590,592-parameter pooler
    assert n + h * h + h == 278_043_648


def test_config_errors(tiny):
  cfg, *_ = tiny
  too_long = jnp.ones((1, cfg.max_positions - 1), jnp.int32)
  with pytest.raises(ValueError, match="sequence length 39 exceeds the 38 positions"):
    nnx.eval_shape(lambda: make(cfg))(too_long, too_long)
  with pytest.raises(ValueError, match="known: base, large, xl, xxl"):
    xlmr.EncoderConfig.preset("huge")
  with pytest.raises(ValueError, match="remat='some'.*none, full, dots"):
    xlmr.EncoderConfig.preset("base", remat="some")
  with pytest.raises(ValueError, match="hidden_act='relu'"):
    xlmr.EncoderConfig.from_hf(
        dict(
            vocab_size=5,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
            hidden_act="relu",
        )
    )


@pytest.mark.parametrize("name", ["base", "xl"])
def test_hf_config_round_trip(name):
  cfg = xlmr.EncoderConfig.preset(name, hidden_dropout=0.0, layer_norm_eps=1e-12)
  hf = cfg.to_hf()
  assert hf["model_type"] == ("xlm-roberta-xl" if name == "xl" else "xlm-roberta")
  assert xlmr.EncoderConfig.from_hf(hf) == cfg
