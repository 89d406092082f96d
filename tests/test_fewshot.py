"""Few-shot end to end: a run on tagging in two languages, then a second run that continues from
it (`init_from`) on k labelled examples of a third language it has never seen."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hyperx_jax.config import common

from configs import tiny
from helpers import SPECIALS, flat_params, tiny_config

K = 4
LANG_TABLE = "adapters/lang_embeddings"


def tag_stream(ws, lang: str, split: str, max_examples=None) -> dict:
  return common.stream("tag", lang, tiny.source(str(ws), "tag", lang, split), max_examples)


def expected_rows(path: str, k: int, max_length: int) -> set[tuple[int, ...]]:
  """input_ids of the file's first k sentences, by hand: the word-level vocabulary puts `w<i>`
  at id len(SPECIALS) + i; `<s>` = 0, `</s>` = 2, padding `<pad>` = 1."""
  with open(path) as f:
    sentences = [block.split("\n") for block in f.read().strip().split("\n\n")][:k]
  rows = set()
  for lines in sentences:
    ids = [0] + [len(SPECIALS) + int(line.split("\t")[0][1:]) for line in lines] + [2]
    rows.add(tuple(ids + [1] * (max_length - len(ids))))
  return rows


class Recorder:
  """The trainer's batch iterator, keeping the input rows it hands out."""

  def __init__(self, batches):
    self.batches, self.rows = batches, set()

  def __next__(self):
    batch = next(self.batches)
    self.rows.update(map(tuple, np.asarray(batch["input_ids"]).tolist()))
    return batch

  def __getattr__(self, name):
    return getattr(self.batches, name)


def test_fewshot_new_language_continues_from_the_first_run(workspace, tmp_path):  # noqa: F811
  from hyperx_jax import train

  # Run 1: tagging in aa and bb.
  first = tiny_config(workspace, tasks="tag", steps=3)
  first.languages = ["aa", "bb"]
  first.train_streams = [tag_stream(workspace, lang, "train") for lang in first.languages]
  first.eval_streams = [tag_stream(workspace, "aa", "test", max_examples=8)]
  first.checkpoint.async_save = False
  trainer1 = train.Trainer(first, str(tmp_path / "first"))
  init1 = flat_params(trainer1.state.trainable)
  trainer1.run()
  final1 = flat_params(trainer1.state.trainable)
  assert not np.array_equal(init1["heads/tag/out/kernel"], final1["heads/tag/out/kernel"])

  # Run 2: k examples of cc, a language run 1 did not have.
  second = tiny_config(workspace, tasks="tag", steps=3)
  second.languages = list(first.languages)
  second.languages.append("cc")
  second.new_languages = ["cc"]
  second.new_language_init = "mean"
  second.init_from = str(tmp_path / "first")
  second.train_streams = [tag_stream(workspace, "cc", "train", max_examples=K)]
  second.eval_streams = [tag_stream(workspace, "cc", "test", max_examples=8)]
  second.checkpoint.async_save = False
  trainer2 = train.Trainer(second, str(tmp_path / "second"))
  start2 = flat_params(trainer2.state.trainable)

  # Step 0 of run 2 is run 1's end; the new language's row is the mean of the trained rows.
  assert start2.keys() == final1.keys()
  for name, value in final1.items():
    if name != LANG_TABLE:
      np.testing.assert_array_equal(start2[name], value, err_msg=name)
  table1, table2 = final1[LANG_TABLE], start2[LANG_TABLE]  # [languages, lang_dim]
  assert table1.shape[0] == 2 and table2.shape == (3,) + table1.shape[1:]
  np.testing.assert_array_equal(table2[:2], table1)
  np.testing.assert_allclose(table2[2], (table1[0] + table1[1]) / 2, rtol=1e-6, atol=1e-7)

  recorder = Recorder(trainer2.train_iter)
  trainer2.train_iter = recorder
  results = trainer2.run()

  # 3 batches of 8 rows drawn from a k = 4 stream: exactly the file's first k sentences.
  assert trainer2.train_iter.rates == {("tag", "cc"): 1.0}
  path = second.train_streams[0]["source"]["path"]
  assert recorder.rows == expected_rows(path, K, second.data.max_length)
  assert not np.array_equal(flat_params(trainer2.state.trainable)[LANG_TABLE][2], table2[2])
  with open(os.path.join(tmp_path / "second", "results.json")) as f:
    saved = json.load(f)
  assert set(saved) == {"tag:cc", "provenance"} and not saved["tag:cc"]["zero_shot"]
  assert saved["tag:cc"]["accuracy"] == results["tag:cc"]["accuracy"]


def test_fewshot_config_samples_k_examples_with_a_seed(workspace, tmp_path):
  """configs/fewshot.py continues a saved run on k examples of a new language drawn with a
  seed: the rows trained on are exactly those k sentences of the file (read by hand), another
  seed draws other ones, and the run's model, tasks and recipe carry over."""
  from hyperx_jax import train
  from hyperx_jax.config import environment

  first = tiny_config(workspace, tasks="tag", steps=2)
  first.languages = ["aa", "bb"]
  first.train_streams = [tag_stream(workspace, lang, "train") for lang in first.languages]
  first.eval_streams = [tag_stream(workspace, "aa", "test", max_examples=8)]
  train.train_and_evaluate(first, str(tmp_path / "first"))

  path = tiny.source(str(workspace), "tag", "cc", "train")["path"]
  n = len(open(path).read().strip().split("\n\n"))
  rows = {}
  for seed in (1, 2):
    config = common.fewshot(
        str(tmp_path / "first"),
        "tag",
        "cc",
        tiny.source(str(workspace), "tag", "cc", "train"),
        tiny.source(str(workspace), "tag", "cc", "test"),
        k=K,
        sample_seed=seed,
        steps=2,
    )
    assert (config.init_from, config.new_languages) == (str(tmp_path / "first"), ["cc"])
    assert config.adapter.bottleneck == first.adapter.bottleneck and config.method == "hyperx"
    spec = environment.parse(config, 8)
    assert spec.train_streams[0].sample_seed == seed and spec.train_streams[0].max_examples == K
    trainer = train.Trainer(config, str(tmp_path / f"second{seed}"))
    recorder = Recorder(trainer.train_iter)
    trainer.train_iter = recorder
    trainer.run()
    rows[seed] = recorder.rows
    drawn = np.sort(np.random.default_rng(seed).choice(n, size=K, replace=False))
    assert recorder.rows == sampled_rows(path, drawn, config.data.max_length)
  assert rows[1] != rows[2]
  with pytest.raises(ValueError, match="has no task 'pos'"):
    common.fewshot(str(tmp_path / "first"), "pos", "cc", {}, {}, k=K, sample_seed=1, steps=2)


def sampled_rows(path: str, indices, max_length: int) -> set[tuple[int, ...]]:
  """input_ids of the file's sentences at `indices`, by hand (see `expected_rows`)."""
  with open(path) as f:
    sentences = [block.split("\n") for block in f.read().strip().split("\n\n")]
  rows = set()
  for i in indices:
    ids = [0] + [len(SPECIALS) + int(line.split("\t")[0][1:]) for line in sentences[i]] + [2]
    rows.add(tuple(ids + [1] * (max_length - len(ids))))
  return rows
