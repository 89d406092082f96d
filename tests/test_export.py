"""Export: the static adapter written for one (task, language) reproduces the hypernetwork path
(encoder output and head logits) without the hypernetwork; with the exported backbone
parameters on the base checkpoint it reproduces a trained run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

import hyperx_jax  # noqa: F401
from hyperx_jax import checkpoint, export, export_format
from hyperx_jax import run as run_lib
from hyperx_jax.config import decode

import helpers
from configs import tiny

HF_CONFIG = {
    "model_type": "xlm-roberta",
    "vocab_size": 60,
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 40,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}


def _config(workspace, method="hyperx"):
  return tiny.get_config(f"workspace={workspace},tasks=tag+pair,method={method}")


def _randomise(tree, seed, std=0.3):
  """Non-trivial adapters and heads (fresh ones are near identity / zero); numpy noise keeps
  the test free of per-shape compilations."""
  rng = np.random.default_rng(seed)

  def one(x):
    noisy = np.asarray(x) + std * rng.standard_normal(x.shape).astype(x.dtype)
    return jax.device_put(noisy, x.sharding)

  return jax.tree.map(one, tree)


def _batch(task_id, lang_id, batch=3, seq=10):
  rng = np.random.default_rng(0)
  ids = rng.integers(3, HF_CONFIG["vocab_size"], (batch, seq)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 0, 2
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  ids[1, 7:] = 1
  return {
      "input_ids": jnp.asarray(ids),
      "attention_mask": jnp.asarray(mask),
      "token_type_ids": jnp.zeros_like(jnp.asarray(ids)),
      "task_id": jnp.full((batch,), task_id, jnp.int32),
      "lang_id": jnp.full((batch,), lang_id, jnp.int32),
  }


@nnx.jit(static_argnames="task")
def _forward(model, batch, stack, task):
  """(hypernetwork path, static-adapter path, no adapter, logits); one compile, not per op."""
  ids, mask = batch["input_ids"], batch["attention_mask"]
  return (
      model.encode(batch, task),
      model.encoder(ids, mask, adapters=stack),
      model.encoder(ids, mask),
      model(batch, task),
  )


@nnx.jit
def _head(head, hidden):
  return head(hidden)


def _check_static_matches_generated(model, config, task, lang, out):
  meta = export.export_adapter(model, config, task, lang, str(out))
  stack, head_params, _, loaded = export.load_static_adapter(str(out))
  assert loaded == json.loads((out / export_format.CONFIG_FILE).read_text()) == meta
  batch = _batch(model.task_id(task), model.lang_id(lang))
  generated, static, bare, logits = _forward(model, batch, stack, task)
  assert float(jnp.abs(generated - bare).max()) > 1e-2  # the adapter matters
  np.testing.assert_allclose(np.asarray(static), np.asarray(generated), atol=1e-5, rtol=0)
  head = export.build_head(loaded, head_params)
  np.testing.assert_allclose(np.asarray(_head(head, static)), np.asarray(logits), atol=1e-5, rtol=0)
  return meta, stack


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run's workdir: config.json, a tiny random HF XLM-R backbone, a checkpoint of random
  (non-trivial) trainable parameters; and the model they make."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tmp = tmp_path_factory.mktemp("export")
  torch.manual_seed(0)
  hf_config = transformers.XLMRobertaConfig(
      **{k: v for k, v in HF_CONFIG.items() if k != "model_type"}
  )
  transformers.XLMRobertaModel(hf_config).save_pretrained(str(tmp / "ws" / "checkpoint"))
  (tmp / "ws" / "tokenizer").mkdir()
  helpers.write_tokenizer(tmp / "ws" / "tokenizer")  # every export carries the run's tokenizer
  config = _config(str(tmp / "ws"))
  workdir = tmp / "run"
  run_lib.save_config(config, str(workdir))
  mesh = jax.make_mesh(
      (1, 1, 1),
      ("data", "fsdp", "tensor"),
      devices=jax.devices()[:1],
      axis_types=(jax.sharding.AxisType.Auto,) * 3,
  )
  spec = decode(config)
  (graphdef, trainable, frozen, _), _ = run_lib.create_model(spec, mesh)
  trainable = _randomise(trainable, seed=3)
  ckpt = checkpoint.Checkpointer(str(workdir), keep=1, async_save=False)
  ckpt.save(7, trainable=trainable, opt_state={}, data_state={})
  ckpt.close()
  return tmp, spec, workdir, nnx.merge(graphdef, trainable, frozen)


def test_export_matches_hypernetwork_path(run):
  tmp, config, _, model = run
  meta, stack = _check_static_matches_generated(model, config, "tag", "bb", tmp / "tag_bb")
  assert meta["labels"] == ["T0", "T1", "T2"] and meta["task_kind"] == "token_classification"
  assert (meta["num_layers"], meta["hidden_size"], meta["bottleneck"]) == (3, 16, 8)
  assert meta["layer_norm"] and meta["placement"] == "ffn_output"
  assert meta["checkpoint"] == str(tmp / "ws" / "checkpoint")
  assert stack[0].down.shape == (3, 1, 16, 8) and stack[0].ln_scale.shape == (3, 1, 16)
  _check_static_matches_generated(model, config, "pair", "cc", tmp / "pair_cc")
  # Different pairs give different adapters.
  other = export.load_static_adapter(str(tmp / "pair_cc")).adapters
  assert not np.allclose(np.asarray(other[0].down), np.asarray(stack[0].down))


def test_load_rejects_other_directories(tmp_path):
  with pytest.raises(FileNotFoundError, match="hyperx_export.json not found"):
    export.load_static_adapter(str(tmp_path))


def test_export_from_run_workdir(run):
  """The CLI's path: config.json + HF backbone + the latest orbax checkpoint of the workdir."""
  tmp, _, workdir, model = run
  out = tmp / "exported"
  meta = export.export_from_run(str(workdir), "tag", "aa", str(out))
  assert meta["step"] == 7 and meta["workdir"] == str(workdir)
  stack, head_params, _, loaded = export.load_static_adapter(str(out))
  batch = _batch(model.task_id("tag"), model.lang_id("aa"))
  generated, static, _, logits = _forward(model, batch, stack, "tag")
  np.testing.assert_allclose(np.asarray(static), np.asarray(generated), atol=1e-5, rtol=0)
  head = export.build_head(loaded, head_params)
  np.testing.assert_allclose(np.asarray(_head(head, static)), np.asarray(logits), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny hyperx run trained 20 steps on tagging (the encoder LayerNorms train at 0.1x lr)."""
  from hyperx_jax import train  # pylint: disable=g-import-not-at-top

  from helpers import make_workspace, tiny_config  # pylint: disable=g-import-not-at-top

  tmp = tmp_path_factory.mktemp("trained")
  workspace = make_workspace(tmp / "ws")
  config = tiny_config(workspace, tasks="tag", steps=20)
  train.train_and_evaluate(config, str(tmp / "run"))
  return tmp, run_lib.restore(str(tmp / "run"))


@nnx.jit(static_argnames="task")
def _trained_outputs(model, batch, task):
  return model.encode(batch, task), model(batch, task)


@nnx.jit
def _exported_outputs(encoder, head, ids, mask, stack):
  hidden = encoder(ids, mask, adapters=stack)
  return hidden, head(hidden)


def test_export_reproduces_the_trained_run(trained):
  """base checkpoint + backbone.safetensors + adapter + head == the trained model (<= 1e-5), and
  without the backbone tensors it would not be."""
  tmp, run = trained
  model = run.model()
  meta = export.export_from_run(run.workdir, "tag", "aa", str(tmp / "tag_aa"))
  exported = export.load_static_adapter(str(tmp / "tag_aa"))
  # What was written: exactly the encoder LayerNorms, under XLMRobertaModel's names.
  layers = run.model_config.encoder.num_layers
  expected = {"embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"} | {
      f"encoder.layer.{i}.{part}.LayerNorm.{w}"
      for i in range(layers)
      for part in ("attention.output", "output")
      for w in ("weight", "bias")
  }
  assert set(exported.backbone) == expected and meta["backbone_tensors"] == sorted(expected)
  assert meta["backbone_file"] == "backbone.safetensors"
  checkpoint = safetensors.numpy.load_file(os.path.join(meta["checkpoint"], "model.safetensors"))
  moved = max(
      float(np.abs(value - checkpoint[name]).max()) for name, value in exported.backbone.items()
  )
  print(f"\nLayerNorms moved by max |delta| = {moved:.4f} over 20 steps")
  assert moved > 3e-3  # measured 9e-3

  batch = _batch(model.task_id("tag"), model.lang_id("aa"), seq=12)
  hidden, logits = _trained_outputs(model, batch, "tag")
  encoder = export.build_encoder(exported)
  head = export.build_head(exported.config, exported.head)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  ours, our_logits = _exported_outputs(encoder, head, ids, mask, exported.adapters)
  hidden_diff = float(jnp.abs(ours - hidden).max())
  logit_diff = float(jnp.abs(our_logits - logits).max())
  base = export.build_encoder(exported._replace(backbone={}))
  bare, _ = _exported_outputs(base, head, ids, mask, exported.adapters)
  without = float(jnp.abs(bare - hidden).max())
  print(
      f"export vs trained: hidden {hidden_diff:.2e}, logits {logit_diff:.2e}; without the "
      f"backbone tensors: hidden {without:.3f}"
  )
  assert hidden_diff <= 1e-5 and logit_diff <= 1e-5
  assert without > 1e-2  # the backbone tensors are needed


def test_export_cli_names_the_valid_choices(trained):
  tmp, run = trained
  with pytest.raises(ValueError, match="unknown task 'ner'; the run's tasks: tag$"):
    export.export_from_run(run.workdir, "ner", "aa", str(tmp / "x"))
  with pytest.raises(ValueError, match="unknown language 'tr'; the run's languages: aa, bb, cc"):
    export.export_from_run(run.workdir, "tag", "tr", str(tmp / "x"))
  with pytest.raises(ValueError, match="unknown export format 'onnx'; known: native, adapterhub"):
    export.export_from_run(run.workdir, "tag", "aa", str(tmp / "x"), format="onnx")
  assert not (tmp / "x").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        (
            {"tasks.pair.pooling": "mean"},
            "task 'pair' pools by 'mean'; AdapterHub's classification",
        ),
        ({"adapter.placement": "layer_output"}, "placement 'layer_output' is not expressible"),
    ],
)
def test_adapterhub_refusals_come_before_loading(run, tmp_path, change, message):
  """What AdapterHub cannot express is refused from config.json alone (this workdir has no
  checkpoint to restore), naming the exact alternative."""
  tmp, _, workdir, _ = run
  config = run_lib.load_config(str(workdir))
  for key, value in change.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  other = tmp_path / "no_checkpoint"
  run_lib.save_config(config, str(other))
  with pytest.raises(ValueError, match=message) as error:
    export.export_from_run(str(other), "pair", "aa", str(tmp_path / "out"), format="adapterhub")
  assert "torch_loader.load_exported" in str(error.value)
  assert not (tmp_path / "out").exists()


def test_an_export_carries_its_tokenizer_labels_and_model_card(trained, monkeypatch):
  """Every export holds the run's tokenizer, id2label and a model card that huggingface_hub
  parses back; --push_to_hub hands the directory to the hub (the upload itself needs hub
  access: here a stand-in for HfApi records the calls)."""
  import huggingface_hub
  import transformers

  from hyperx_jax import hub, tokenizer
  from hyperx_jax.errors import UserError

  tmp, run = trained
  out = tmp / "shared"
  meta = export.export_from_run(run.workdir, "tag", "aa", str(out))
  assert meta["id2label"] == {"0": "T0", "1": "T1", "2": "T2"} and meta["label2id"]["T2"] == 2
  assert not (out / export_format.LEGACY_CONFIG_FILE).exists()
  ours = transformers.AutoTokenizer.from_pretrained(str(out))
  theirs = tokenizer.load_tokenizer(run.spec.tokenizer_path)
  assert ours("w1 w7 w30")["input_ids"] == theirs("w1 w7 w30")["input_ids"]
  card = huggingface_hub.ModelCard.load(out / export_format.README_FILE)
  assert card.data.library_name == "hyperx_jax" and card.data.language == ["aa"]
  assert "hyper-x" in card.data.tags and card.data.metrics == ["accuracy", "f1"]
  results = json.loads((tmp / "run" / "results.json").read_text())
  assert f"accuracy {100 * results['tag:aa']['accuracy']:.1f} %" in card.text
  assert "load_exported" in card.text and results["provenance"]["config_sha256"] in card.text

  calls = []

  class FakeApi:

    def __init__(self, token=None):
      calls.append(("token", token))

    def create_repo(self, repo_id, **kwargs):
      calls.append(("create_repo", repo_id, kwargs))
      return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
      calls.append(("upload_folder", kwargs["folder_path"], kwargs["repo_id"]))

  monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
  assert hub.push(str(out), "me/tag-aa", private=True) == "https://huggingface.co/me/tag-aa"
  assert ("upload_folder", str(out), "me/tag-aa") in calls
  assert calls[1][2]["private"] is True and calls[1][2]["exist_ok"] is True
  with pytest.raises(UserError, match="expected OWNER/NAME"):
    hub.push(str(out), "tag-aa")

  def offline(*args, **kwargs):
    raise ConnectionError("hub unreachable")

  monkeypatch.setattr(FakeApi, "create_repo", offline)
  with pytest.raises(UserError, match="could not push .* ConnectionError: hub unreachable"):
    hub.push(str(out), "me/tag-aa")
  assert (out / export_format.CONFIG_FILE).exists()  # the export on disk stays complete
