"""Trainer runs of the baselines (MAD-X, static task adapters, full fine-tuning) and of bf16
compute (task adapters, against the same float32 step), on the tiny workspace of test_train.py.

Each method takes one optimiser step. Weight decay is off here so that "this parameter got no
gradient" reads exactly as "this parameter did not change" (Adam turns a zero gradient into a
zero update; decoupled decay would still shrink it).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, NamedTuple

import numpy as np
import pytest
from safetensors.numpy import load_file

from hyperx_jax.config import common

from configs import tiny
from helpers import flat_params, read_metrics, tiny_config

# Encoder parameters and the checkpoint tensors (PyTorch names, [out, in]) they load from.
WORD = "encoder/embeddings/word"
FFN_IN = "encoder/layers/ffn_in/kernel"  # [layers, in, out]


def checkpoint_tensors(ws) -> dict[str, np.ndarray]:
  """WORD and FFN_IN as the checkpoint file on disk holds them, in our layout."""
  tensors = load_file(str(ws / "checkpoint" / "model.safetensors"))
  ffn_in = [tensors[f"encoder.layer.{i}.intermediate.dense.weight"].T for i in range(2)]
  return {WORD: tensors["embeddings.word_embeddings.weight"], FFN_IN: np.stack(ffn_in)}


# (method, trained pair): MAD-X takes an MLM batch (language adapter only), the others a tagging
# batch.
METHODS = [
    ("madx", ("mlm", "cc")),
    ("task_adapters", ("tag", "aa")),
    ("full_finetune", ("tag", "aa")),
]


class Run(NamedTuple):
  """One finished one-step run: parameters (host copies) before and after the step."""

  config: Any
  workdir: str
  trainer: Any
  trainable0: dict
  trainable1: dict
  frozen0: dict
  frozen1: dict
  results: dict


def one_step_config(ws, method: str, train_pair: tuple[str, str], dtype: str):
  """tiny config (tag + mlm heads), one step on `train_pair`, eval on 8 tag/aa examples."""
  config = tiny_config(ws, tasks="tag+mlm", method=method, steps=1)
  task, lang = train_pair
  config.train_streams = [common.stream(task, lang, tiny.source(str(ws), task, lang, "train"))]
  config.eval_streams = [
      common.stream("tag", "aa", tiny.source(str(ws), "tag", "aa", "test"), max_examples=8)
  ]
  config.model.dtype = dtype
  config.optim.weight_decay = 0.0
  config.checkpoint.async_save = False
  return config


@pytest.fixture(scope="module")
def one_step_run(workspace, tmp_path_factory):  # noqa: F811
  """run(method, dtype='float32') -> Run, each (method, dtype) trained once per module (the
  bf16 test reuses the float32 run of the method tests)."""
  from hyperx_jax import train

  runs = {}

  def run(method: str, dtype: str = "float32") -> Run:
    if (method, dtype) not in runs:
      config = one_step_config(workspace, method, dict(METHODS)[method], dtype)
      workdir = str(tmp_path_factory.mktemp(f"{method}_{dtype}"))
      trainer = train.Trainer(config, workdir)
      trainable0, frozen0 = flat_params(trainer.state.trainable), flat_params(trainer.parts.frozen)
      results = trainer.run()
      runs[method, dtype] = Run(
          config,
          workdir,
          trainer,
          trainable0,
          flat_params(trainer.state.trainable),
          frozen0,
          flat_params(trainer.parts.frozen),
          results,
      )
    return runs[method, dtype]

  return run


def step_loss(workdir: str) -> float:
  (record,) = [r for r in read_metrics(workdir) if r["step"] == 1 and "loss" in r["scalars"]]
  return record["scalars"]["loss"]


def changed(before: dict, after: dict) -> set[str]:
  assert before.keys() == after.keys()
  return {p for p in before if not np.array_equal(before[p], after[p])}


def rows_changed(before: np.ndarray, after: np.ndarray) -> list[int]:
  """Indices along the leading (unit) axis whose values differ."""
  return [i for i in range(before.shape[0]) if not np.array_equal(before[i], after[i])]


def assert_rows_changed(before: dict, after: dict, prefix: str, expected: list[int]) -> None:
  """Only the `expected` units of every `prefix*` table moved, and each of them in some leaf
  (at step 1 only the adapter's LayerNorm moves: its γ = 0 stops the gradient to D and U)."""
  moved = set()
  for path in (p for p in before if p.startswith(prefix)):
    rows = rows_changed(before[path], after[path])
    assert set(rows) <= set(expected), (path, rows)
    moved.update(rows)
  assert moved == set(expected), (prefix, moved)


@pytest.mark.parametrize("method", [m for m, _ in METHODS])
def test_method_one_step_trains_only_its_parameters(workspace, one_step_run, method):  # noqa: F811
  config, workdir, trainer, t0, t1, f0, f1, results = one_step_run(method)
  assert math.isfinite(step_loss(workdir))
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["tag:aa"]["accuracy"] == pytest.approx(results["tag:aa"]["accuracy"])

  pretrained = checkpoint_tensors(workspace)
  assert f0.keys() == f1.keys() and not changed(f0, f1)  # frozen state untouched by the step
  moved = changed(t0, t1)
  if method == "full_finetune":
    assert not f0  # nothing frozen
    for name, value in pretrained.items():  # the backbone starts pretrained, then trains
      np.testing.assert_allclose(t0[name], value, rtol=0, atol=1e-6, err_msg=name)
      assert name in moved
    assert "heads/tag/out/kernel" in moved
    assert not any(p.startswith("heads/mlm/") for p in moved)  # no MLM batch
    return

  for name, value in pretrained.items():  # the frozen backbone keeps the checkpoint's values
    assert name not in t0
    np.testing.assert_allclose(f1[name], value, rtol=0, atol=1e-6, err_msg=name)
  assert all(not p.startswith("encoder/") or p.endswith(("ln/scale", "ln/bias")) for p in t0)
  task, lang = dict(METHODS)[method]
  task_id, lang_id = trainer.task_names.index(task), config.languages.index(lang)
  if method == "madx":
    # MLM skips the task adapter: only the batch language's adapter (and the MLM head, LNs) move.
    assert_rows_changed(t0, t1, "adapters/language/", [lang_id])
    assert not any(p.startswith(("adapters/task/", "heads/tag/")) for p in moved), moved
    assert "heads/mlm/dense/kernel" in moved
  else:
    assert_rows_changed(t0, t1, "adapters/", [task_id])
    assert not any(p.startswith("heads/mlm/") for p in moved), moved
    assert "heads/tag/out/kernel" in moved


def test_bf16_step_matches_fp32_and_keeps_fp32_params(one_step_run):
  fp32, bf16 = one_step_run("task_adapters"), one_step_run("task_adapters", "bfloat16")
  for params in (bf16.trainable1, bf16.frozen1):
    assert {str(x.dtype) for x in params.values()} == {"float32"}
  loss32, loss16 = step_loss(fp32.workdir), step_loss(bf16.workdir)
  assert math.isfinite(loss16)
  assert loss16 != loss32  # the step really computed in bf16
  assert loss16 == pytest.approx(loss32, rel=5e-2)
  assert changed(bf16.trainable0, bf16.trainable1) == changed(fp32.trainable0, fp32.trainable1)
