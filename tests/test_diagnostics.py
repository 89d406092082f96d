"""Training diagnostics: per-task gradient norms per group, second-moment shares, loss onsets."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from hyperx_jax import diagnostics as diag

from helpers import read_metrics, run_dir, tiny_config


def test_gradient_groups_and_norms_by_hand():
  grads = {
      "adapters": {
          "generators": {"down": {"kernel": jnp.full((2, 3), 2.0)}},
          "lang_embeddings": jnp.ones((4, 2)),
      },
      "heads": {"pos": {"out": {"kernel": jnp.zeros((3,))}}},
  }
  stats = diag.gradient_stats(grads)
  assert float(stats["diag/grad_sq/generators"]) == 24.0
  assert float(stats["diag/grad_norm/generators"]) == pytest.approx(math.sqrt(24.0))
  assert float(stats["diag/grad_norm/lang_embeddings"]) == pytest.approx(math.sqrt(8.0))
  assert float(stats["diag/grad_norm/heads"]) == 0.0
  assert diag.group_of("adapters/task/down") == "static_adapters"
  assert diag.group_of("encoder/layers/attention_ln/scale") == "encoder"


def test_interval_shares_and_means_by_hand():
  tasks = ["a", "b", "a"]
  metrics = [
      {"diag/grad_sq/generators": 1.0, "diag/grad_norm/generators": 1.0},
      {"diag/grad_sq/generators": 6.0, "diag/grad_norm/generators": 6.0**0.5},
      {"diag/grad_sq/generators": 3.0, "diag/grad_norm/generators": 3.0**0.5},
  ]
  out = diag.interval_summary(tasks, metrics)
  assert out["diag/nu_share/generators/a"] == pytest.approx(0.4)
  assert out["diag/nu_share/generators/b"] == pytest.approx(0.6)
  assert out["diag/grad_norm/generators/a"] == pytest.approx((1 + 3**0.5) / 2)
  assert "diag/grad_sq/generators/a" not in out


def test_projection_norm_by_hand():
  p = jnp.array([[[3.0, 4.0], [0.0, 1.0]], [[6.0, 8.0], [0.0, 0.0]]])  # [L 2, G 2, P 2]
  out = diag.projection_stats(p)
  assert float(out["diag/adapter/projection_norm"]) == pytest.approx((5 + 1 + 10 + 0) / 4)


def test_loss_onsets_from_logged_losses():
  chance = {"pairs": math.log(2), "pos": math.log(17)}
  records = [
      {"step": 25, "scalars": {"loss/pairs": 0.70, "loss/pos": 2.8}},
      {"step": 50, "scalars": {"loss/pairs": 0.69, "loss/pos": 1.2}},
      {"step": 75, "scalars": {"loss/pairs": 0.60}},
  ]
  assert diag.loss_onsets(records, chance) == {"pairs": 75, "pos": 50}


def test_final_losses_average_each_tasks_last_logged_values():
  records = [
      {"step": 25, "scalars": {"loss": 9.0, "loss/pairs": 0.9, "loss/pos": 2.0}},
      {"step": 50, "scalars": {"loss/pairs": 0.5, "loss/pos": 1.0}},
      {"step": 75, "scalars": {"loss/pairs": 0.3}},
  ]
  assert diag.final_losses(records, points=2) == pytest.approx({"pairs": 0.4, "pos": 1.5})


def test_a_per_task_recipe_run_logs_diagnostics_per_task(workspace, tmp_path):  # noqa: F811
  from hyperx_jax import train

  config = tiny_config(workspace, tasks="tag+pair", steps=10)
  config.diagnostics = True
  config.optim.per_task_state = "^(adapters|encoder)/"  # the 'per_task' recipe trains too
  workdir = run_dir(tmp_path)
  train.train_and_evaluate(config, workdir)
  scalars = [r for r in read_metrics(workdir) if "loss" in r["scalars"]][-1]["scalars"]
  tasks = [t for t in ("tag", "pair") if f"loss/{t}" in scalars]
  assert tasks
  shares = [scalars[f"diag/nu_share/generators/{t}"] for t in tasks]
  assert np.sum(shares) == pytest.approx(1.0)
  for t in tasks:
    assert scalars[f"diag/grad_norm/generators/{t}"] > 0
    assert scalars[f"diag/adapter/up_norm/{t}"] > 0
    assert scalars[f"diag/adapter/projection_norm/{t}"] > 0
  text = diag.report(workdir)
  assert "loss leaves chance" in text and "diag/nu_share/generators" in text
  for task, loss in diag.final_losses(read_metrics(workdir)).items():
    assert f"  {task:12s} {loss:.4f}" in text  # the report's end-of-training losses
