"""Dev selects, test reports: during training only dev pairs are evaluated; the test pairs are
evaluated once, on the checkpoint that was best on dev, and the results say which it was."""

from __future__ import annotations

import json
import os

import pytest

from hyperx_jax import evaluate, train

from helpers import tiny_config

STEPS, EVERY = 12, 3


def _config(workspace):  # noqa: F811
  c = tiny_config(workspace, tasks="tag+pair", steps=STEPS)
  dev = {**c.eval_streams[0], "role": "dev"}  # tag:aa
  c.eval_streams = [dev] + [{**s, "role": "test"} for s in c.eval_streams]
  c.eval_every_steps = c.checkpoint.every_steps = EVERY
  c.checkpoint.keep = 1
  c.checkpoint.best_metric = "tag:aa/f1"
  c.optim.lr = 3e-2  # dev F1 moves between evaluations, so the best is not trivially the last
  return c


@pytest.fixture(scope="module")
def selected_run(workspace, tmp_path_factory):  # noqa: F811
  workdir = str(tmp_path_factory.mktemp("selection") / "run")
  calls = []
  original = evaluate.evaluate_all

  def recording(eval_step, trainable, frozen, datasets, *args, **kwargs):
    calls.append(sorted(f"{t}:{l}" for t, l in datasets))
    return original(eval_step, trainable, frozen, datasets, *args, **kwargs)

  evaluate.evaluate_all = recording
  try:
    table = train.train_and_evaluate(_config(workspace), workdir)
  finally:
    evaluate.evaluate_all = original
  return workdir, table, calls


def _dev_history(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {
      r["step"]: r["scalars"]["eval/tag/aa/f1"] for r in rows if "eval/tag/aa/f1" in r["scalars"]
  }


def test_test_pairs_are_evaluated_once_and_dev_pairs_during_training(selected_run):
  _, table, calls = selected_run
  periodic, final = calls[:-2], calls[-2:]
  assert len(periodic) == STEPS // EVERY and all(c == ["tag:aa"] for c in periodic)
  assert final == [["tag:aa"], ["pair:aa", "pair:cc", "tag:aa", "tag:bb"]]
  assert sorted(table) == ["pair:aa", "pair:cc", "tag:aa", "tag:bb"]


def test_the_reported_checkpoint_is_the_best_on_dev(selected_run):
  workdir, table, _ = selected_run
  history = _dev_history(workdir)
  assert sorted(history) == list(range(EVERY, STEPS + 1, EVERY))
  best = max(history, key=lambda step: (history[step], -step))  # orbax keeps the first best
  assert best != STEPS  # the reported checkpoint is restored, not the state in memory
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  chosen = saved["provenance"]["selection"]
  assert saved["provenance"]["step"] == chosen["step"] == best
  assert chosen["by"] == "tag:aa/f1" and chosen["value"] == pytest.approx(history[best])
  assert chosen["dev"]["tag:aa"]["f1"] == pytest.approx(history[best])
  # Independently: that step's checkpoint, evaluated on its own, gives the reported table.
  _, again = evaluate.evaluate_checkpoint(workdir, step=best)
  assert again.table == table


def test_a_run_without_test_streams_reports_its_dev_pairs_at_the_last_step(
    workspace, tmp_path  # noqa: F811
):
  c = tiny_config(workspace, tasks="tag", steps=2)
  table = train.train_and_evaluate(c, str(tmp_path / "run"))
  with open(tmp_path / "run" / "results.json") as f:
    saved = json.load(f)
  assert sorted(table) == ["tag:aa", "tag:bb"]
  assert saved["provenance"]["selection"] == {"step": 2, "by": None, "value": None}


def test_commands_read_the_reported_checkpoint_by_default(selected_run, tmp_path):
  """Without --step, evaluate, export and predict use the step results.json reports (the best
  on dev, not the last), and reproduce its numbers."""
  import numpy as np

  from hyperx_jax import cli, export, predict, run

  workdir, table, _ = selected_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  best = saved["provenance"]["step"]
  assert best != STEPS
  assert run.resolve_step(workdir) == (
      best,
      f"the step results.json reports: best tag:aa/f1 = "
      f"{saved['provenance']['selection']['value']:.4f} on dev",
  )

  cli.invoke(evaluate, [f"--workdir={workdir}", f"--out={tmp_path / 'eval'}"])
  with open(tmp_path / "eval" / "results.json") as f:
    again = json.load(f)
  assert {k: v for k, v in again.items() if k != "provenance"} == {
      k: v for k, v in saved.items() if k != "provenance"
  }
  assert again["provenance"]["selection"]["by"] == "tag:aa/f1"

  meta = export.export_from_run(workdir, "tag", "bb", str(tmp_path / "export"))
  assert meta["step"] == best and "best tag:aa/f1" in meta["step_reason"]
  exported = export.load_static_adapter(str(tmp_path / "export")).adapters[0].down
  model = run.restore(workdir, step=best, load_pretrained=False).model()
  import jax.numpy as jnp

  ids = jnp.array([model.task_id("tag")]), jnp.array([model.lang_id("bb")])
  np.testing.assert_allclose(exported, model.adapter_weights(*ids)[0].down, atol=1e-6)
  latest = run.restore(workdir, step="latest", load_pretrained=False).model()
  assert not np.allclose(exported, latest.adapter_weights(*ids)[0].down, atol=1e-6)

  config = run.load_config(workdir)
  test_file = next(
      s["source"]["path"]
      for s in config.eval_streams
      if (s["task"], s["lang"], s["role"]) == ("tag", "bb", "test")
  )
  summary = predict.predict_file(workdir, "tag", "bb", test_file, str(tmp_path / "bb.iob2"))
  assert summary["step"] == best
  gold = [line.split("\t")[1] for line in open(test_file).read().splitlines() if line.strip()]
  got = [
      line.split("\t")[1] for line in open(tmp_path / "bb.iob2").read().splitlines() if line.strip()
  ]
  accuracy = sum(a == b for a, b in zip(gold, got)) / len(gold)
  assert accuracy == pytest.approx(saved["tag:bb"]["accuracy"])
