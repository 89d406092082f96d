"""Language swap: a zero-shot pair scored with other languages' vectors (evaluate
--language_swap, --pairs=task:lang@other), its reading, and the average over runs."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from hyperx_jax import cli, evaluate, language_swap, train

from helpers import run_dir, tiny_config


def test_keys_and_readings_by_hand():
  assert language_swap.swapped_key("pairs:tr", "de") == "pairs:tr@de"
  assert language_swap.swapped_key("pairs:tr", "tr") == "pairs:tr"
  assert language_swap.split_swapped("pairs:tr@de") == ("pairs", "tr", "de")
  assert language_swap.split_swapped("pairs:tr") == ("pairs", "tr", "tr")
  read = language_swap.reading
  assert read({"tr": 80.0, "de": 80.5, "fr": 79.6}, "tr").startswith("does not depend")
  assert read({"tr": 80.0, "de": 78.0, "fr": 77.0}, "tr") == "its own vector carries the transfer"
  assert read({"tr": 80.0, "de": 82.0, "fr": 70.0}, "tr") == (
      "another language's vector scores higher (de)"
  )
  assert language_swap.own_minus_others({"tr": 80.0, "de": 78.0, "fr": 77.0}, "tr") == 2.5


def test_aggregate_over_seeds_by_hand():
  a = {"pairs:tr": {"tr": 80.0, "de": 78.0}}
  b = {"pairs:tr": {"tr": 84.0, "de": 80.0}}
  text = language_swap.aggregate([("Hyper-X", a), ("Hyper-X", b)])
  assert "| pairs:tr | tr (own) | 82.0 ± 2.8 |" in text  # mean 82, sample std 2.83
  assert "| pairs:tr | de | 79.0 ± 1.4 |" in text
  # own - others: 2 and 4 -> 3.0 ± 1.4; both runs read 'its own vector carries the transfer'
  assert "| pairs:tr | 3.0 ± 1.4 (own vector carries it in 2 of 2) |" in text


@pytest.fixture(scope="module")
def trained_runs(workspace, tmp_path_factory):
  """Hyper-X and task adapters, 6 steps on the tiny pair task (pair:cc is zero-shot)."""
  root = tmp_path_factory.mktemp("swap")
  out = {}
  for method in ("hyperx", "task_adapters"):
    config = tiny_config(workspace, tasks="pair+mlm", steps=6, method=method)
    out[method] = run_dir(root, method)
    train.train_and_evaluate(config, out[method])
  return out


def test_language_swap_scores_each_trained_vector(trained_runs, tmp_path):
  checkpoint = evaluate.restore_checkpoint(trained_runs["hyperx"])
  table = checkpoint.language_swap()
  assert list(table) == ["pair:cc"]  # the one zero-shot pair; its own vector first
  assert list(table["pair:cc"]) == ["cc", "aa", "bb"]
  # The same as asking for the swapped pair, and its own vector as the run's own table.
  asked = checkpoint.evaluate(evaluate.parse_pairs("pair:cc@aa,pair:cc", checkpoint.trained.spec))
  assert asked.table["pair:cc@aa"]["accuracy"] * 100 == pytest.approx(table["pair:cc"]["aa"])
  results = json.loads(pathlib.Path(trained_runs["hyperx"], "results.json").read_text())
  assert results["pair:cc"]["accuracy"] * 100 == pytest.approx(table["pair:cc"]["cc"])
  cli.invoke(
      evaluate, [f"--workdir={trained_runs['hyperx']}", "--language_swap", f"--out={tmp_path}"]
  )
  written = json.loads((tmp_path / "language_swap.json").read_text())
  assert written["pair:cc"] == pytest.approx(table["pair:cc"])
  assert "| pair:cc |" in (tmp_path / "language_swap.md").read_text()


def test_task_adapters_read_no_language(trained_runs):
  """Static task adapters do not take the language: every vector scores the same."""
  table = evaluate.restore_checkpoint(trained_runs["task_adapters"]).language_swap()
  scores = list(table["pair:cc"].values())
  np.testing.assert_allclose(scores, scores[0])


def test_bad_swaps_name_the_choices(trained_runs):
  spec = evaluate.restore_checkpoint(trained_runs["hyperx"]).trained.spec
  with pytest.raises(ValueError, match=r"'zz' is not a language of the run"):
    evaluate.parse_pairs("pair:cc@zz", spec)
  with pytest.raises(ValueError, match=r"'pair:dd@aa' is not an eval pair"):
    evaluate.parse_pairs("pair:dd@aa", spec)
