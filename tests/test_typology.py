"""Typology-informed language vectors: URIEL lookup against lang2vec's own loader, the config
check, identity at init, and a tiny run with hyperx.language_source='typology' (gradient into
the projection, an eval-only language's vector, resume, export)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyperx_jax import typology
from hyperx_jax.config.vocabulary import TYPOLOGY_FEATURE_SETS
from hyperx_jax.models.hypernet import HyperNetConfig, HyperNetwork

from helpers import per_layer_outputs, tiny_config

ALL_SETS = "+".join(TYPOLOGY_FEATURE_SETS)


@pytest.fixture(scope="module")
def lang2vec():
  """lang2vec's own loader. It locates its files with `pkg_resources`, which current
  setuptools no longer ships: a stand-in resolves them inside the installed package."""
  root = importlib.resources.files("lang2vec")
  shim = types.ModuleType("pkg_resources")
  shim.resource_filename = lambda _, name: str(root / name)
  saved = sys.modules.get("pkg_resources")
  sys.modules["pkg_resources"] = shim
  try:
    yield importlib.import_module("lang2vec.lang2vec")
  finally:
    if saved is None:
      sys.modules.pop("pkg_resources", None)
    else:
      sys.modules["pkg_resources"] = saved


def test_lookup_matches_lang2vec_and_accepts_both_iso_codes(lang2vec):
  for code in ("deu", "jpn", "tur"):
    expected = np.asarray(lang2vec.get_features([code], ALL_SETS)[code], np.float64)
    assert expected.shape == (289,) and set(np.unique(expected)) <= {0.0, 1.0}
    np.testing.assert_array_equal(typology.raw_features([code])[0], expected)
  np.testing.assert_array_equal(typology.raw_features(["de"]), typology.raw_features(["deu"]))
  for codes in (["zh_CN", "zh", "zho"], ["pt-BR", "pt", "por"], ["sr@latin", "srp"]):
    z = typology.feature_matrix(codes)
    assert all(np.array_equal(z[0], row) for row in z[1:]), codes
  syntax = np.asarray(lang2vec.get_features(["jpn"], "syntax_knn")["jpn"], np.float64)
  np.testing.assert_array_equal(typology.raw_features(["ja"], ["syntax_knn"])[0], syntax)


def test_standardised_vectors_over_all_uriel_languages():
  values, codes, _, _ = typology._data()  # pylint: disable=protected-access
  # lang2vec's set order (checked against its loader above), here over all URIEL languages.
  f = values[:, typology.feature_columns(list(TYPOLOGY_FEATURE_SETS))].astype(np.float64)
  varying = f.std(0) > 0
  standard = np.zeros_like(f)
  standard[:, varying] = (f[:, varying] - f[:, varying].mean(0)) / f[:, varying].std(0)
  expected = standard / np.abs(standard).sum(1).mean()  # mean L1 norm 1 over URIEL
  # ('alb' and 'gre' are ISO 639-2/B codes that lang2vec maps to 'sqi' and 'ell'.)
  own = [i for i, c in enumerate(codes) if typology.resolve(c) == c]
  assert len(own) == len(codes) - 2
  z = typology.feature_matrix([codes[i] for i in own])
  np.testing.assert_allclose(z, expected[own], rtol=1e-5, atol=1e-6)
  assert not z[:, ~varying].any()  # features constant over URIEL carry nothing


def test_unknown_code_names_close_matches(workspace):  # noqa: F811
  with pytest.raises(typology.UnknownLanguageError, match=r"'deux'.*close matches: \[.*'deu'"):
    typology.resolve("deux")
  from hyperx_jax.config import ConfigError, environment

  config = tiny_config(workspace, tasks="pair", languages="de+tr+deux")
  environment.parse(config, 8)  # the learned source reads no URIEL features
  config.hyperx.language_source = "typology"
  with pytest.raises(
      ConfigError,
      match=r"config.languages\[2\]: 'deux' is not a language URIEL knows "
      r"\(close matches: \[.*'deu'",
  ):
    environment.parse(config, 8)


def test_config_check_of_the_options_that_go_with_the_source(workspace):  # noqa: F811
  from hyperx_jax.config import ConfigError, environment

  config = tiny_config(workspace, tasks="pair", languages="de+tr+ja")
  config.new_language_init = "typology"
  config.hyperx.untrained_language = "mean"
  config.hyperx.typology_features = ("syntax_knn", "geo")
  del config.hyperx["unit_projection"]  # as a config built without common's bool default
  config.hyperx.unit_projection = "yes"  # a string would read as True: refused
  with pytest.raises(ConfigError) as e:
    environment.parse(config, 8)
  assert "config.hyperx.unit_projection: 'yes'; expected True or False" in str(e.value)
  del config.hyperx["unit_projection"]
  config.hyperx.unit_projection = True
  assert "config.new_language_init: 'typology' needs" in str(e.value)
  assert "config.hyperx.typology_features: ['syntax_knn', 'geo']" in str(e.value)
  config.hyperx.typology_features = ("syntax_knn",)
  config.hyperx.language_source = "both"
  with pytest.raises(ConfigError, match="untrained_language: 'mean' reads learned"):
    environment.parse(config, 8)
  config.hyperx.untrained_language = "row"
  environment.parse(config, 8)


def test_demo_held_out_languages_have_no_training_data():
  from hyperx_jax.config import environment

  from configs import demo

  for source in ("learned", "typology", "both"):
    spec = environment.parse(demo.get_config(f"held_out=ja+ru+zh_CN,language_source={source}"), 1)
    trained = {s.lang for s in spec.train_streams}
    assert {"ja", "ru", "zh_CN"} <= set(spec.languages) - trained
    assert {("pairs", lang) for lang in ("ja", "ru", "zh_CN")} <= spec.zero_shot_pairs()
    hc = environment.hypernet_config(spec)
    assert hc.language_source == source
    # The learned source reads the mean of the trained rows for them ('mean init').
    expected = tuple(spec.languages.index(l) for l in ("ja", "ru", "zh_CN"))
    assert hc.mean_languages == (expected if source == "learned" else ())
  with pytest.raises(ValueError, match=r"held_out='de': \['de'\] are not held-out pair"):
    demo.get_config("held_out=de")


def _nets(z):
  """One hypernetwork per source; the typology ones take the learned one's shared parameters
  (the sources draw different numbers of random keys)."""
  kwargs = dict(hidden_size=64, num_layers=3, num_tasks=2, num_languages=3)
  nets = {
      s: HyperNetwork(
          HyperNetConfig(bottleneck=16, language_source=s),
          rngs=nnx.Rngs(3),
          language_features=z,
          **kwargs,
      )
      for s in ("learned", "typology", "both")
  }
  shared = {
      p: v
      for p, v in nnx.to_flat_state(nnx.state(nets["learned"], nnx.Param))
      if p[0] != "lang_embeddings"
  }
  for s in ("typology", "both"):
    for path, var in nnx.to_flat_state(nnx.state(nets[s], nnx.Param)):
      if path in shared:
        var[...] = shared[path][...]
  return nets


def test_identity_at_init_as_learned():
  z = jnp.asarray(typology.feature_matrix(["de", "tr", "ja"]))
  nets = _nets(z)
  assert not np.asarray(nets["typology"].typology_projection[...]).any()  # W = 0
  assert not np.asarray(nets["both"].lang_embeddings[...]).any()  # the residual E = 0
  np.testing.assert_array_equal(nets["typology"].lang_features[...], z)
  learned = nets["learned"]
  learned.lang_embeddings[...] = jnp.zeros_like(learned.lang_embeddings[...])
  reference = learned(jnp.array([0, 1]), jnp.array([1, 2]))
  x = jax.random.normal(jax.random.key(0), (2, 5, 64))
  for source in ("typology", "both"):
    w = nets[source](jnp.array([0, 1]), jnp.array([1, 2]))
    # Exactly what `learned` generates from a zero language vector ...
    for name, value in w._asdict().items():
      np.testing.assert_array_equal(value, getattr(reference, name), err_msg=f"{source} {name}")
    # ... which is near the identity, as test_hypernet checks for `learned`.
    assert float(jnp.abs(w.ln_scale).max()) < 0.02
    out = per_layer_outputs(jax.tree.map(lambda a: a[:, :1], w), x)
    np.testing.assert_allclose(out, np.broadcast_to(x, out.shape), atol=0.1)
    assert float(jnp.abs(out - x).mean()) < 0.02


def test_language_vectors_per_source():
  z = np.asarray(typology.feature_matrix(["de", "tr", "ja"]))
  nets = _nets(jnp.asarray(z))
  rng = np.random.default_rng(0)
  w = rng.normal(size=nets["both"].typology_projection.shape).astype(np.float32)
  e = rng.normal(size=nets["both"].lang_embeddings.shape).astype(np.float32)
  nets["typology"].typology_projection[...] = jnp.asarray(w)
  nets["both"].typology_projection[...] = jnp.asarray(w)
  nets["both"].lang_embeddings[...] = jnp.asarray(e)
  np.testing.assert_allclose(nets["typology"].language_vectors(), z @ w, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nets["both"].language_vectors(), e + z @ w, rtol=1e-5, atol=1e-5)
  mean = HyperNetwork(
      HyperNetConfig(bottleneck=4, mean_languages=(1,)),
      hidden_size=8,
      num_layers=1,
      num_tasks=1,
      num_languages=3,
      rngs=nnx.Rngs(0),
  )
  rows = np.asarray(mean.lang_embeddings[...])
  np.testing.assert_allclose(
      mean.language_vectors(), [rows[0], (rows[0] + rows[2]) / 2, rows[2]], rtol=1e-6
  )
  with pytest.raises(ValueError, match=r"needs language_features \[3, F\]"):
    HyperNetwork(
        HyperNetConfig(bottleneck=4, language_source="both"),
        hidden_size=8,
        num_layers=1,
        num_tasks=1,
        num_languages=3,
        rngs=nnx.Rngs(0),
    )


def test_fewshot_typology_init_zeroes_the_new_rows(workspace):  # noqa: F811
  from hyperx_jax import run
  from hyperx_jax.config import decode

  spec = decode(tiny_config(workspace, tasks="pair", languages="de+tr+ja"))
  spec = dataclasses.replace(spec, new_languages=("ja",), new_language_init="typology")
  table = jnp.arange(6.0).reshape(3, 2)
  out = run.init_new_languages(spec, {"adapters": {"lang_embeddings": table}})
  np.testing.assert_array_equal(out["adapters"]["lang_embeddings"], [[0, 1], [2, 3], [0, 0]])


def test_typology_run_trains_the_projection_resumes_and_exports(workspace, tmp_path):  # noqa: F811
  from hyperx_jax import export, train

  # pair:de and pair:tr are trained; ja appears only in an eval stream (no data of any kind).
  config = tiny_config(workspace, tasks="pair", steps=1, languages="de+tr+ja")
  config.hyperx.language_source = "typology"
  config.checkpoint.async_save = False
  workdir = str(tmp_path / "run")
  first = train.Trainer(config, workdir)
  assert first.train()  # one step, checkpointed (no evaluation: one compile fewer)
  first.ckpt.wait()
  first.ckpt.close()
  first.writer.close()
  first.preempted.uninstall()

  config.total_steps = 2  # resume: the same workdir continues from step 1
  trainer = train.Trainer(config, workdir)
  assert trainer.state.step == 1
  after_one = np.asarray(trainer.state.trainable["adapters"]["typology_projection"][...])
  # W starts at 0, and Adam turns a zero gradient into a zero step (weight decay of 0 is 0):
  # a non-zero W after one step means the gradient reached it.
  assert np.abs(after_one).max() > 1e-4
  results = trainer.run()
  assert trainer.state.step == 2 and results["pair:ja"]["zero_shot"]
  from hyperx_jax import diagnostics

  assert diagnostics.group_of("adapters/typology_projection") == "typology_projection"

  model = trainer.parts.merge(trainer.state.trainable)
  projection = np.asarray(model.adapters.typology_projection[...])
  assert not np.array_equal(projection, after_one)
  z = typology.feature_matrix(["de", "tr", "ja"])
  np.testing.assert_array_equal(model.adapters.lang_features[...], z)  # rebuilt, not saved
  np.testing.assert_allclose(
      model.adapters.language_vectors()[2], z[2] @ projection, rtol=1e-5, atol=1e-6
  )

  out = str(tmp_path / "export_ja")
  meta = export.export_from_run(workdir, "pair", "ja", out)
  assert meta["step"] == 2 and meta["language"] == "ja"
  stack = export.load_static_adapter(out).adapters
  expected = model.adapter_weights(
      jnp.array([model.task_id("pair")]), jnp.array([model.lang_id("ja")])
  )
  for name in ("down", "up", "ln_scale"):
    np.testing.assert_allclose(
        getattr(stack[0], name), getattr(expected[0], name), rtol=1e-6, atol=1e-7
    )
