"""End-to-end trainer tests on a tiny random XLM-R and tiny local files.

The workspace (`workspace` fixture in conftest.py, helpers in helpers.py) is shared by the
other trainer tests.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from helpers import read_metrics, run_dir, tiny_config


def test_one_step_end_to_end_writes_results(workspace, tmp_path):
  from hyperx_jax import train

  config = tiny_config(workspace, tasks="tag", steps=1)
  workdir = run_dir(tmp_path)
  results = train.train_and_evaluate(config, workdir)
  assert set(results) == {"tag:aa", "tag:bb"}
  assert results["tag:bb"]["zero_shot"] and not results["tag:aa"]["zero_shot"]
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["tag:aa"]["accuracy"] == pytest.approx(results["tag:aa"]["accuracy"])
  for name in ("results.md", "results.csv", "results.png", "config.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert read_metrics(workdir)[0]["step"] == 1
  # `python -m hyperx_jax.evaluate` path: the saved checkpoint gives the same numbers.
  from hyperx_jax import evaluate

  _, again = evaluate.evaluate_checkpoint(workdir, pairs_text="tag:bb")
  assert again.table == {"tag:bb": results["tag:bb"]}


def test_loss_falls_over_20_steps_and_each_task_compiles_once(workspace, tmp_path):
  from hyperx_jax import train

  config = tiny_config(workspace, tasks="tag+pair", steps=20)
  config.data.weights = (4.0, 1.0, 1.0)  # tag/aa, pair/aa, pair/bb: mostly the tagging task
  trainer = train.Trainer(config, run_dir(tmp_path))
  results = trainer.run()
  records = read_metrics(trainer.workdir)
  tag_losses = [r["scalars"]["loss/tag"] for r in records if "loss/tag" in r["scalars"]]
  assert len(tag_losses) == 4  # logged every 5 steps
  assert tag_losses[-1] < tag_losses[0] - 0.15, tag_losses
  assert any("loss/pair" in r["scalars"] for r in records)  # both tasks were trained
  # One executable per task over 20 steps: task names are static, ids and steps traced;
  # compiled ahead of time (aot.py) and never again by jit's own cache.
  assert sorted(trainer.train_step.executables) == ["pair", "tag"]
  assert sorted(trainer.eval_step.executables) == ["pair", "tag"]
  assert trainer.train_step.jitted._cache_size() == trainer.eval_step.jitted._cache_size() == 0
  assert results["tag:aa"]["accuracy"] > 0.6  # chance is 1/3
  assert results["pair:cc"]["zero_shot"] and not results["pair:aa"]["zero_shot"]


def test_packed_training_follows_the_padded_run_in_fewer_rows(workspace, tmp_path):
  """16 sentences a step in 8 rows instead of 16 (8 devices): each step takes the padded step's
  sentences (every one fits), so the losses, gradient norms and results are the padded run's
  (dropout off: its masks follow the layout)."""
  from hyperx_jax import train

  trainers = {}
  for name, packing, rows in (("padded", 0, 0), ("packed", 8, 8)):
    config = tiny_config(workspace, tasks="tag+pair", steps=4, batch=16)
    config.model.hidden_dropout = config.model.attention_dropout = 0.0
    config.model.classifier_dropout = 0.0
    config.log_every_steps = 1
    config.data.max_length = 38  # the encoder's most: room for every batch in 8 rows
    config.data.packing, config.data.packed_rows = packing, rows
    trainers[name] = trainer = train.Trainer(config, run_dir(tmp_path, name))
    trainer.results = trainer.run()
  padded, packed = trainers["padded"], trainers["packed"]
  state = packed.train_iter.get_state()
  assert sum(state["batches"].values()) == 4
  assert {name.split("/")[0] for name, n in state["batches"].items() if n} == {"tag", "pair"}
  assert state["positions"] == padded.train_iter.get_state()["positions"]
  metrics = {
      n: [r["scalars"] for r in read_metrics(t.workdir) if "loss" in r["scalars"]]
      for n, t in trainers.items()
  }
  assert len(metrics["packed"]) == 4
  assert [m["examples_per_batch"] for m in metrics["packed"]] == [16.0] * 4
  assert "examples_per_batch" not in metrics["padded"][0]
  for key in ("loss", "grad_norm", "param_norm"):
    np.testing.assert_allclose(
        [m[key] for m in metrics["packed"]],
        [m[key] for m in metrics["padded"]],
        rtol=1e-5,
        err_msg=key,
    )
  for pair, row in padded.results.items():
    assert packed.results[pair]["accuracy"] == pytest.approx(row["accuracy"], abs=1e-6)
  # The packed data state (positions and batches per stream) comes back with the checkpoint.
  assert train.Trainer(packed.config, packed.workdir).train_iter.get_state() == state


def test_new_language_rows_start_from_the_mean_of_the_trained_ones(workspace):
  import dataclasses

  import jax.numpy as jnp

  from hyperx_jax import run
  from hyperx_jax.config import decode

  config = tiny_config(workspace, tasks="tag")
  spec = dataclasses.replace(decode(config), new_languages=("cc",))
  assert spec.languages[2] == "cc"
  table = jnp.asarray([[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]])
  other = jnp.ones((3, 2))
  state = {"adapters": {"lang_embeddings": table, "task_embeddings": other}}
  out = run.init_new_languages(spec, state)
  np.testing.assert_array_equal(
      out["adapters"]["lang_embeddings"], [[1.0, 2.0], [3.0, 6.0], [2.0, 4.0]]
  )
  np.testing.assert_array_equal(out["adapters"]["task_embeddings"], other)


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(workspace, tmp_path):
  import jax.numpy as jnp

  from hyperx_jax import checkpoint, train, writers

  config = tiny_config(workspace, tasks="tag", steps=6)
  config.log_every_steps = 3
  config.checkpoint.every_steps = 3
  config.checkpoint.async_save = False
  trainer = train.Trainer(config, run_dir(tmp_path))
  batches = trainer.train_iter

  class PoisonAfter4:
    """From the 5th batch on, the frozen backbone holds NaNs (as a diverged run would)."""

    def __init__(self):
      self.n = 0

    def __next__(self):
      self.n += 1
      if self.n == 5:
        nan = lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x
        trainer.parts = trainer.parts._replace(frozen=jax.tree.map(nan, trainer.parts.frozen))
      return next(batches)

    def get_state(self):
      return batches.get_state()

  trainer.train_iter = PoisonAfter4()
  with pytest.raises(writers.NonFiniteError, match=r"NaN/Inf in 2 of the last 3 steps"):
    trainer.run()
  ckpt = checkpoint.Checkpointer(trainer.workdir, read_only=True, async_save=False)
  assert ckpt.all_steps() == [3]  # step 6 was not saved
  restored = ckpt.restore(abstract_trainable=trainer.state.trainable)
  ckpt.close()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["trainable"]))
  # The skipped updates left the parameters as they were after step 4.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(trainer.state.trainable))
