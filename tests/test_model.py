"""HyperXModel: identity at init, trainable-only gradients, MLM parity with transformers, losses."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from hyperx_jax.config import decode, environment
from hyperx_jax.config.sections import TaskSpec
from hyperx_jax.config.vocabulary import max_mlm_predictions
from hyperx_jax.models import weights
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.losses import compute_loss, predict, select_mlm_positions
from hyperx_jax.models.model import HyperXModel, build_model
from hyperx_jax.models.parameters import parameter_report
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.optim import trainable_filter

from hf_fixtures import load_torch_model, make_tiny_xlmr_checkpoint

B, S, V = 3, 10, 60
ENC = EncoderConfig(
    vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=40
)
TASKS = {
    "xnli": TaskSpec("xnli", "pair_classification", ("e", "n", "c")),
    "ner": TaskSpec("ner", "token_classification", tuple("OBIbiXY")),
    "mlm": TaskSpec("mlm", "mlm"),
}
LANGS = ["en", "tr", "ar"]
RULES = [
    (r"^adapters/", True),
    (r"^heads/", True),
    (r"(^|/)(ln|attention_ln|output_ln)/", True),
    (r".*", False),
]


def _model(method: str, **hyper) -> HyperXModel:
  return HyperXModel(
      ENC, TASKS, LANGS, method, HyperNetConfig(bottleneck=8, **hyper), rngs=nnx.Rngs(0)
  )


def _batch(labels_kind: str = "token", seed: int = 0, task_id: int = 1, lang_id: int = 1) -> dict:
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, V, (B, S)).astype(np.int32)
  ids[:, 0] = 0
  mask = np.ones((B, S), np.int32)
  mask[1, 7:] = 0
  ids[mask == 0] = 1
  if labels_kind == "pair":
    labels = rng.integers(0, 3, (B,)).astype(np.int32)
  else:
    labels = np.where(rng.random((B, S)) < 0.3, rng.integers(0, 7, (B, S)), -100)
    labels[mask == 0] = -100
    labels[:, 1] = 4  # at least one label per row
  return {
      k: jnp.asarray(v)
      for k, v in dict(
          input_ids=ids,
          attention_mask=mask,
          token_type_ids=np.zeros_like(ids),
          labels=labels.astype(np.int32),
          task_id=np.full(B, task_id, np.int32),
          lang_id=np.full(B, lang_id, np.int32),
          example_mask=np.array([1, 1, 0], np.int32),
      ).items()
  }


@pytest.mark.parametrize("method,atol", [("hyperx", 2e-2), ("task_adapters", 0.0), ("madx", 0.0)])
def test_fresh_adapters_are_identity(method, atol):
  model = _model(method)
  batch = _batch()
  plain = model.encoder(batch["input_ids"], batch["attention_mask"])
  adapted = model.encode(batch, "ner")
  assert len(model.adapter_weights(batch["task_id"][:1], batch["lang_id"][:1])) == (
      2 if method == "madx" else 1
  )
  np.testing.assert_allclose(adapted, plain, atol=max(atol, 1e-6), rtol=0)
  if method == "hyperx":  # generated, not exactly zero: the adapters are really applied
    assert float(jnp.abs(adapted - plain).max()) > 0


def test_mixed_pairs_match_per_pair_batches():
  model = _model("hyperx")
  _randomise_adapters(model)
  batch = _batch()
  mixed = dict(batch, task_id=jnp.array([0, 1, 1]), lang_id=jnp.array([2, 0, 1]))
  together = model.encode(mixed, "ner", groups=mixed["task_id"].shape[0])
  for b in range(B):
    alone = model.encode(
        dict(
            batch,
            task_id=mixed["task_id"][b : b + 1].repeat(B),
            lang_id=mixed["lang_id"][b : b + 1].repeat(B),
        ),
        "ner",
    )
    np.testing.assert_allclose(together[b], alone[b], atol=1e-5)


def _randomise_adapters(model: HyperXModel) -> None:
  rng = np.random.default_rng(0)
  for _, p in nnx.to_flat_state(nnx.state(model.adapters, nnx.Param)):
    p[...] = jnp.asarray(rng.normal(0, 0.05, p.shape), jnp.float32)


def test_gradients_only_for_trainable_params():
  model = _model("hyperx")
  graphdef, trainable, frozen = nnx.split(model, trainable_filter(RULES, model)[0], ...)
  names = lambda state: {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(state)}
  assert any(n.startswith("adapters/") for n in names(trainable))
  assert not any("kernel" in n for n in names(trainable) if n.startswith("encoder/"))
  batch = _batch()

  def loss_fn(trainable, frozen):
    return compute_loss(
        nnx.merge(graphdef, trainable, frozen), batch, "ner", dropout_rng=jax.random.key(1)
    )[0]

  traced = jax.jit(jax.grad(loss_fn)).trace(trainable, frozen)
  # Only the trainable leaves get cotangents out of the graph.
  assert len(traced.jaxpr.out_avals) == len(jax.tree.leaves(trainable))
  grads = traced.lower().compile()(trainable, frozen)
  assert names(grads) == names(trainable)
  opt = optax.adam(1e-2)
  updates, _ = opt.update(grads, opt.init(trainable), trainable)
  new_trainable = optax.apply_updates(trainable, updates)
  new_model = nnx.merge(graphdef, new_trainable, frozen)
  for (path, old), (_, new) in zip(
      nnx.to_flat_state(nnx.state(model, nnx.Param)),
      nnx.to_flat_state(nnx.state(new_model, nnx.Param)),
  ):
    name = "/".join(map(str, path))
    changed = not np.array_equal(old[...], new[...])
    if name in names(frozen):
      assert not changed, name
    if name.startswith(("heads/ner/", "adapters/generators/")):  # on this task's path
      assert changed, name
  gen = dict(nnx.to_flat_state(grads))[("adapters", "generators", "down", "kernel")]
  assert float(jnp.abs(gen[...]).max()) > 0


def test_madx_mlm_trains_language_adapter_only():
  model = _model("madx")
  batch = _batch(lang_id=2)
  graphdef, trainable, frozen = nnx.split(model, trainable_filter(RULES, model)[0], ...)

  def loss_fn(trainable):
    return compute_loss(nnx.merge(graphdef, trainable, frozen), batch, "mlm")[0]

  grads = dict(nnx.to_flat_state(jax.jit(jax.grad(loss_fn))(trainable)))
  # Static adapters start with γ = 0, so the first gradient reaches their LayerNorm.
  lang_ln = np.asarray(grads[("adapters", "language", "ln_scale")][...])  # [languages, L, H]
  assert np.abs(lang_ln[2]).max() > 0 and not np.abs(lang_ln[:2]).any()
  assert not np.abs(np.asarray(grads[("adapters", "task", "ln_scale")][...])).any()


@pytest.mark.parametrize("method", ["full_finetune", "madx"])
def test_mlm_logits_match_transformers(tmp_path, method):
  directory = make_tiny_xlmr_checkpoint(
      tmp_path / "ckpt",
      mlm=True,
      vocab_size=V,
      hidden=32,
      layers=2,
      heads=4,
      intermediate=64,
      max_positions=40,
  )
  enc = EncoderConfig.from_hf(directory, hidden_dropout=0.0, attention_dropout=0.0)
  model = HyperXModel(
      enc, {"mlm": TASKS["mlm"]}, LANGS, method, HyperNetConfig(bottleneck=8), rngs=nnx.Rngs(0)
  )
  weights.load_encoder_weights(model.encoder, directory)
  assert model.heads["mlm"].load_hf(weights.load_mlm_head_weights(directory)) == []
  batch = _batch(task_id=0)
  positions, _, _ = select_mlm_positions(batch["labels"], max_mlm_predictions(S))
  ours = np.asarray(model(batch, "mlm", mlm_positions=positions))  # [B, K, V]
  torch_model = load_torch_model(directory, mlm=True)
  with torch.no_grad():
    ref = torch_model(
        input_ids=torch.tensor(np.asarray(batch["input_ids"]), dtype=torch.long),
        attention_mask=torch.tensor(np.asarray(batch["attention_mask"])),
    ).logits
  ref = np.take_along_axis(ref.numpy(), np.asarray(positions)[..., None], axis=1)
  assert ours.shape == (B, max_mlm_predictions(S), V)
  assert np.abs(ours - ref).max() <= 1e-4


def test_mlm_head_without_pretrained_weights_warns(caplog):
  model = _model("full_finetune")
  assert "lm_head.dense.weight" in model.heads["mlm"].load_hf(None)
  assert "freshly initialised" in caplog.text


def test_select_mlm_positions_by_hand():
  labels = np.full((2, 8), -100, np.int32)
  labels[0, [1, 4, 6]] = [11, 12, 13]
  labels[1, [0, 2, 3, 5, 7]] = [21, 22, 23, 24, 25]
  positions, picked, dropped = select_mlm_positions(jnp.asarray(labels), 4)
  np.testing.assert_array_equal(positions[0, :3], [1, 4, 6])
  np.testing.assert_array_equal(picked, [[11, 12, 13, -100], [21, 22, 23, 24]])
  np.testing.assert_array_equal(dropped, [0, 1])
  assert max_mlm_predictions(128) == math.ceil(0.15 * 128) + 1 == 21


@pytest.mark.parametrize("kind,task", [("token", "ner"), ("pair", "xnli")])
def test_loss_matches_numpy(kind, task):
  model = _model("task_adapters")
  batch = _batch(kind, task_id=list(TASKS).index(task))
  loss, aux = compute_loss(model, batch, task)
  logits = np.asarray(model(batch, task), np.float64)
  labels, keep = np.asarray(batch["labels"]), np.asarray(batch["example_mask"]).astype(bool)
  if kind == "token":
    keep = keep[:, None] & (labels != -100)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(log_probs, np.where(keep, labels, 0)[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, nll[keep].mean(), rtol=1e-5)
  assert int(aux["count"]) == keep.sum()
  correct = (logits.argmax(-1) == labels)[keep].sum()
  assert int(aux["correct"]) == correct
  np.testing.assert_allclose(aux["accuracy"], correct / keep.sum(), rtol=1e-6)
  pred = predict(model, batch, task)
  assert pred.dtype == jnp.int32 and pred.shape == labels.shape
  np.testing.assert_array_equal(pred, logits.argmax(-1))


def test_unknown_names_list_known_ones():
  model = _model("hyperx")
  with pytest.raises(KeyError, match="unknown task 'pos'; known: xnli, ner, mlm"):
    model(_batch(), "pos")
  with pytest.raises(KeyError, match="unknown language 'fi'; known: en, tr, ar"):
    model.lang_id("fi")
  with pytest.raises(ValueError, match="unknown method 'lora'; known: hyperx"):
    _model("lora")


def _config(method: str = "hyperx") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = method
  c.model = dict(
      checkpoint=None,
      preset="base",
      dtype="float32",
      param_dtype="float32",
      scan_layers=True,
      remat="none",
      hidden_dropout=0.1,
      attention_dropout=0.1,
      classifier_dropout=0.2,
  )
  c.adapter = dict(bottleneck=16, placement="ffn_output", layer_norm=True)
  c.hyperx = dict(
      task_dim=8,
      lang_dim=8,
      layer_dim=8,
      projected_dim=12,
      use_projector=True,
      condition_on_layer=True,
      init_std=0.01,
  )
  c.tasks = ml_collections.ConfigDict()
  c.tasks.ner = dict(kind="token_classification", labels=["O", "B-PER", "I-PER"])
  c.tasks.mlm = dict(kind="mlm")
  c.languages = ["en", "de"]
  return c


def test_build_model_from_config_and_parameter_report(tmp_path):
  directory = make_tiny_xlmr_checkpoint(
      tmp_path / "ckpt",
      vocab_size=V,
      hidden=32,
      layers=2,
      heads=4,
      intermediate=64,
      max_positions=40,
  )
  config = _config()
  config.model.checkpoint = str(directory)
  model = build_model(environment.model_config(decode(config)), rngs=nnx.Rngs(0))
  assert model.encoder.config.num_layers == 2 and model.encoder.config.hidden_dropout == 0.1
  assert model.adapters.generators["down"]["kernel"].shape == (12, 32 * 16)
  assert model.heads["ner"].out.kernel.shape == (32, 3) and model.heads["ner"].dropout_rate == 0.2
  sizes = {
      "/".join(map(str, p)): int(np.prod(v.shape))
      for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
  }
  is_trainable = lambda name: name.startswith(("adapters/", "heads/"))
  report = parameter_report(model, is_trainable)
  print(report)
  last = report.splitlines()[-1].split()
  assert last[0] == "all"
  assert int(last[1].replace(",", "")) == sum(sizes.values())
  assert int(last[2].replace(",", "")) == sum(v for k, v in sizes.items() if is_trainable(k))
  row = next(r for r in report.splitlines() if r.startswith("heads/ner "))
  assert int(row.split()[1].replace(",", "")) == 32 * 3 + 3
  predicate, _ = trainable_filter([(r"^(adapters|heads)/", True), (r".*", False)], model)
  assert parameter_report(model, predicate) == report
  config.method = "madx"
  config.model.checkpoint = None  # preset 'base', built abstractly
  abstract = nnx.eval_shape(
      lambda: build_model(environment.model_config(decode(config)), rngs=nnx.Rngs(0))
  )
  assert abstract.encoder.config.hidden_size == 768
  assert abstract.adapters.language.down.shape == (2, 12, 768, 16)


def test_pair_pooling_cls_or_mean_over_real_tokens():
  from hyperx_jax.models.heads import pool

  hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)  # [B, S, H]
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  np.testing.assert_array_equal(pool(hidden, mask, "cls"), hidden[:, 0])
  np.testing.assert_allclose(pool(hidden, mask, "mean"), [[1.0, 2.0], [8.0, 9.0]])
  errors = []
  TaskSpec("p", "pair_classification", ("a", "b"), pooling="max").check(errors)
  assert errors == ["config.tasks.p.pooling: 'max' is not one of ['cls', 'mean']"]
