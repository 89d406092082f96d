"""Hugging Face checkpoint loading: formats, name map, errors, sharded loading on 8 devices."""

import json
import shutil

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from safetensors.numpy import load_file, save_file

from hyperx_jax.models import weights, xlmr

import hf_fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """One MLM checkpoint in every format (same weights) and its torch state dict."""
  root = tmp_path_factory.mktemp("ckpt")
  kw = dict(mlm=True, layer_norm_eps=1e-12, type_vocab_size=2, seed=4)
  single = hf_fixtures.make_tiny_xlmr_checkpoint(root / "single", **kw)
  sharded = hf_fixtures.make_tiny_xlmr_checkpoint(root / "sharded", max_shard_size="20KB", **kw)
  binary = hf_fixtures.make_tiny_xlmr_checkpoint(root / "bin", safe_serialization=False, **kw)
  state = {k: v.numpy() for k, v in hf_fixtures.make_tiny_xlmr_model(**kw).state_dict().items()}
  return dict(root=root, single=single, sharded=sharded, bin=binary, state=state)


def encoder_for(path, **overrides):
  return xlmr.XLMREncoder(
      weights.encoder_config_from_checkpoint(path, **overrides), rngs=nnx.Rngs(0)
  )


def flat_params(enc):
  return {
      "/".join(map(str, k)): np.asarray(v.get_value())
      for k, v in nnx.to_flat_state(nnx.state(enc, nnx.Param))
  }


def test_name_map_against_torch_state_dict(ckpt):
  enc = encoder_for(ckpt["single"])
  report = weights.load_encoder_weights(enc, ckpt["single"])
  p, sd = flat_params(enc), ckpt["state"]
  n, d = enc.config.num_heads, enc.config.head_dim
  assert sorted(report.loaded) == sorted(weights.PARAM_MAP) and report.initialised == []
  assert report.ignored == sorted(
      f"lm_head.{k}"
      for k in ("bias", "dense.bias", "dense.weight", "layer_norm.bias", "layer_norm.weight")
  )
  np.testing.assert_array_equal(
      p["embeddings/word"], sd["roberta.embeddings.word_embeddings.weight"]
  )
  np.testing.assert_array_equal(p["embeddings/ln/scale"], sd["roberta.embeddings.LayerNorm.weight"])
  for i in range(enc.config.num_layers):
    layer = f"roberta.encoder.layer.{i}."
    q = sd[layer + "attention.self.query.weight"]  # [N*D, H], output unit = head * D + d
    np.testing.assert_array_equal(p["layers/attention/query/kernel"][i][:, 1, 2], q[1 * d + 2])
    np.testing.assert_array_equal(
        p["layers/attention/value/bias"][i].reshape(-1), sd[layer + "attention.self.value.bias"]
    )
    out = sd[layer + "attention.output.dense.weight"]  # [H, N*D]
    np.testing.assert_array_equal(
        p["layers/attention/out/kernel"][i][n - 1, 0], out[:, (n - 1) * d]
    )
    np.testing.assert_array_equal(
        p["layers/ffn_in/kernel"][i], sd[layer + "intermediate.dense.weight"].T
    )
    np.testing.assert_array_equal(
        p["layers/ffn_out/kernel"][i], sd[layer + "output.dense.weight"].T
    )
    np.testing.assert_array_equal(
        p["layers/output_ln/bias"][i], sd[layer + "output.LayerNorm.bias"]
    )


def test_map_runs_backwards_to_the_torch_state_dict(ckpt):
  """to_hf_tensors(every parameter) == the torch state dict (names without the model prefix);
  apply_hf_tensors puts tensors back by those names, and only those."""
  enc = encoder_for(ckpt["single"])
  weights.load_encoder_weights(enc, ckpt["single"])
  ours = weights.to_hf_tensors(flat_params(enc), enc.config)
  theirs = {
      k.removeprefix("roberta."): v
      for k, v in ckpt["state"].items()
      if k.startswith("roberta.") and "position_ids" not in k
  }
  assert sorted(ours) == sorted(theirs)
  for name, value in theirs.items():
    np.testing.assert_array_equal(ours[name], value, err_msg=name)
  fresh = encoder_for(ckpt["single"])
  before = flat_params(fresh)
  names = [
      "encoder.layer.1.output.LayerNorm.weight",
      "encoder.layer.0.output.LayerNorm.weight",
      "embeddings.LayerNorm.bias",
      "encoder.layer.0.attention.self.key.weight",
      "encoder.layer.1.attention.self.key.weight",
  ]
  changed = weights.apply_hf_tensors(fresh, {n: theirs[n] for n in names})
  assert changed == ["embeddings/ln/bias", "layers/attention/key/kernel", "layers/output_ln/scale"]
  after, loaded = flat_params(fresh), flat_params(enc)
  for path in after:
    np.testing.assert_array_equal(after[path], (loaded if path in changed else before)[path])
  with pytest.raises(ValueError, match="has part of layers/output_ln/scale but lacks"):
    weights.apply_hf_tensors(fresh, {names[0]: theirs[names[0]]})
  with pytest.raises(ValueError, match=r"\['pooler.dense.bias'\] are not parameters"):
    weights.apply_hf_tensors(fresh, {"pooler.dense.bias": np.zeros(3)})


@pytest.mark.parametrize("fmt", ["sharded", "bin"])
def test_other_formats_load_the_same_values(ckpt, fmt):
  if fmt == "sharded":
    assert (ckpt["sharded"] / weights.SAFETENSORS_INDEX).is_file()
    assert len(list(ckpt["sharded"].glob("*.safetensors"))) > 1
  ref, enc = encoder_for(ckpt["single"]), encoder_for(ckpt[fmt])
  weights.load_encoder_weights(ref, ckpt["single"])
  weights.load_encoder_weights(enc, ckpt[fmt])
  a, b = flat_params(ref), flat_params(enc)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  head = weights.load_mlm_head_weights(ckpt[fmt])
  np.testing.assert_array_equal(head["dense.weight"], ckpt["state"]["lm_head.dense.weight"])


def test_mlm_head_names_and_shapes(ckpt, tmp_path):
  head = weights.load_mlm_head_weights(ckpt["single"])
  sd = ckpt["state"]
  assert set(head) == {"dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"}
  for k, v in head.items():
    np.testing.assert_array_equal(v, sd["lm_head." + k], err_msg=k)
  assert head["bias"].shape == (sd["roberta.embeddings.word_embeddings.weight"].shape[0],)
  plain = hf_fixtures.make_tiny_xlmr_checkpoint(tmp_path / "plain")
  assert weights.load_mlm_head_weights(plain) is None


def copy_without(src, dst, drop=(), add=None):
  """A copy of a single-file checkpoint with tensors removed / added."""
  dst.mkdir()
  shutil.copy(src / "config.json", dst / "config.json")
  tensors = {k: v for k, v in load_file(src / weights.SAFETENSORS).items() if k not in drop}
  save_file({**tensors, **(add or {})}, dst / weights.SAFETENSORS)
  return dst


def test_error_directory_without_weights(ckpt, tmp_path):
  shutil.copy(ckpt["single"] / "config.json", tmp_path / "config.json")
  enc = encoder_for(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    weights.load_encoder_weights(enc, tmp_path)
  for name in weights.WEIGHT_FILES:
    assert name in str(e.value)
  assert "config.json" in str(e.value)
  with pytest.raises(FileNotFoundError, match="neither a directory nor a hub id"):
    weights.resolve_checkpoint(str(tmp_path / "nope"))


def test_error_missing_tensor(ckpt, tmp_path):
  name = "roberta.encoder.layer.1.output.dense.bias"
  path = copy_without(ckpt["single"], tmp_path / "c", drop=[name])
  with pytest.raises(ValueError, match=f"missing tensors.*{name}"):
    weights.load_encoder_weights(encoder_for(path), path)


def test_missing_allowed_stays_initialised(ckpt, tmp_path):
  name = "roberta.embeddings.token_type_embeddings.weight"
  path = copy_without(ckpt["single"], tmp_path / "c", drop=[name])
  enc = encoder_for(path)
  before = flat_params(enc)["embeddings/token_type"]
  report = weights.load_encoder_weights(enc, path, allow_missing=["token_type"])
  assert report.initialised == ["embeddings/token_type"]
  np.testing.assert_array_equal(flat_params(enc)["embeddings/token_type"], before)


def test_error_unexpected_tensor(ckpt, tmp_path):
  path = copy_without(
      ckpt["single"],
      tmp_path / "c",
      add={"classifier.out_proj.weight": np.zeros((3, 32), np.float32)},
  )
  with pytest.raises(ValueError, match=r"unexpected tensors.*classifier\.out_proj\.weight"):
    weights.load_encoder_weights(encoder_for(path), path)


def test_error_shape_mismatch(ckpt):
  enc = encoder_for(ckpt["single"], intermediate_size=48)
  with pytest.raises(ValueError) as e:
    weights.load_encoder_weights(enc, ckpt["single"])
  msg = str(e.value)
  assert "layers/ffn_in/kernel (2, 32, 48)" in msg and "(64, 32)" in msg and "(48, 32)" in msg


def test_config_from_checkpoint(ckpt):
  cfg = weights.encoder_config_from_checkpoint(ckpt["single"], remat="full")
  hf = json.loads((ckpt["single"] / "config.json").read_text())
  assert (
      cfg.vocab_size,
      cfg.hidden_size,
      cfg.num_layers,
      cfg.num_heads,
      cfg.intermediate_size,
      cfg.max_positions,
      cfg.type_vocab_size,
      cfg.layer_norm_eps,
      cfg.remat,
  ) == (
      hf["vocab_size"],
      hf["hidden_size"],
      hf["num_hidden_layers"],
      hf["num_attention_heads"],
      hf["intermediate_size"],
      hf["max_position_embeddings"],
      2,
      1e-12,
      "full",
  )


RULES = {"mlp": "tensor", "heads": "tensor", "embed": "fsdp", "vocab": "tensor"}


def shardings_for(abstract_enc, mesh):
  """NamedShardings from the parameters' logical axes (test-local rules)."""
  state = nnx.state(abstract_enc, nnx.Param)
  return jax.tree.map(
      lambda v: NamedSharding(
          mesh, PartitionSpec(*[RULES.get(a) for a in v.get_metadata()["out_sharding"]])
      ),
      state,
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )


def test_sharded_load_reads_slices_and_matches(ckpt, monkeypatch):
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("fsdp", "tensor"))
  path = ckpt["single"]
  cfg = weights.encoder_config_from_checkpoint(path)
  abstract = nnx.eval_shape(lambda: xlmr.XLMREncoder(cfg, rngs=nnx.Rngs(0)))
  shardings = shardings_for(abstract, mesh)
  reads = []
  read = weights.TensorSource.read

  def recording_read(self, name, index=None):
    out = read(self, name, index)
    reads.append((name, out.size))
    return out

  monkeypatch.setattr(weights.TensorSource, "read", recording_read)
  weights.load_encoder_weights(abstract, path, shardings=shardings)
  monkeypatch.undo()

  ffn = "roberta.encoder.layer.0.intermediate.dense.weight"
  sizes = [n for name, n in reads if name == ffn]
  assert sizes and max(sizes) == ckpt["state"][ffn].size // 8  # [64/4, 32/2] per device
  kernel = abstract.layers.ffn_in.kernel.get_value()
  assert kernel.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (2, 16, 16)
  ref = encoder_for(path)
  weights.load_encoder_weights(ref, path)
  got, want = flat_params(abstract), flat_params(ref)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  ids = np.array([[0, 5, 6, 2, 1], [0, 7, 2, 1, 1]])
  out = jax.jit(lambda e, i, m: e(i, m))(abstract, ids, (ids != 1).astype(np.int32))
  np.testing.assert_allclose(
      np.asarray(out), np.asarray(ref(ids, (ids != 1).astype(np.int32))), atol=1e-5
  )


def test_existing_placement_is_kept(ckpt):
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("fsdp", "tensor"))
  enc = encoder_for(ckpt["single"])
  state = nnx.state(enc, nnx.Param)
  placed = jax.tree.map(
      jax.device_put, nnx.to_pure_dict(state), nnx.to_pure_dict(shardings_for(enc, mesh))
  )
  nnx.replace_by_pure_dict(state, placed)
  nnx.update(enc, state)
  weights.load_encoder_weights(enc, ckpt["single"])
  assert enc.layers.ffn_out.kernel.get_value().sharding.spec == PartitionSpec(
      None, "tensor", "fsdp"
  )
  np.testing.assert_array_equal(
      np.asarray(enc.embeddings.word.get_value()),
      ckpt["state"]["roberta.embeddings.word_embeddings.weight"],
  )


def test_torch_state_dict_bin_is_weights_only(ckpt):
  """The .bin written by the fixture is a plain state dict (what weights_only=True reads)."""
  sd = torch.load(ckpt["bin"] / weights.TORCH_BIN, weights_only=True)
  assert "roberta.embeddings.word_embeddings.weight" in sd
