"""The config layer: each field's default, check and change policy written once, decoding of
configs saved by earlier versions, and unknown fields named."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from hyperx_jax import run
from hyperx_jax.config import ConfigError, RunSpec, changes, common, decode, parse, sections

from helpers import tiny_config

DATA = pathlib.Path(__file__).parent / "data"


def test_get_config_holds_exactly_the_declared_defaults():
  assert decode(common.get_config()) == RunSpec()
  assert common.get_config().data.temperature == sections.DataSpec().temperature == 5.0


def test_the_change_policies_read_off_the_fields():
  """The two lists are what the fields declare, and what resume and compare used before."""
  assert set(changes.RESUMABLE_CHANGES) == {
      "total_steps",
      "eval_every_steps",
      "log_every_steps",
      "checkpoint.every_steps",
      "checkpoint.keep",
      "checkpoint.async_save",
      "data.prefetch",
      "model.attention",
  }
  assert set(changes.COLUMN_IGNORES) == {
      "seed",
      "eval_every_steps",
      "log_every_steps",
      "checkpoint.every_steps",
      "checkpoint.keep",
      "checkpoint.async_save",
      "data.prefetch",
      "diagnostics",
      "model.attention",
      "train_streams[].sample_seed",  # few-shot's sample seeds are seeds of one column
      "eval_streams[].sample_seed",
  }
  assert set(changes.HYPERNETWORK_ONLY_FIELDS) == {
      f"hyperx.{name}"
      for name in (
          "task_dim",
          "lang_dim",
          "layer_dim",
          "projected_dim",
          "use_projector",
          "condition_on_layer",
          "unit_projection",
          "typology_features",
      )
  }


@pytest.mark.parametrize(
    "path,default",
    [
        ("data.temperature", 5.0),
        ("data.packing", 0),
        ("hyperx.untrained_language", "row"),
        ("eval_streams[3].role", "dev"),
        ("train_streams[0].max_examples", None),
        ("tasks.ner.pooling", "cls"),
        ("mesh.shape", [-1, 1, 1]),
        ("nonsense.field", changes.ABSENT),
    ],
)
def test_default_at_a_config_path(path, default):
  assert changes.default_at(path) == default


def test_a_config_saved_before_the_config_layer_decodes_and_resumes(workspace):
  """tests/data/config_before_config_layer.json was written by the code before this layer
  (the tiny config, its workspace replaced by WORKSPACE); it lacks data.prefetch."""
  text = (DATA / "config_before_config_layer.json").read_text()
  saved = json.loads(text.replace("WORKSPACE", str(workspace)))
  assert "prefetch" not in saved["data"]
  spec = decode(saved)
  assert spec == decode(tiny_config(workspace))
  assert spec.data.prefetch == 0 and spec.eval_streams[0].role == "dev"
  assert (
      changes.changes_beyond(
          saved, json.loads(tiny_config(workspace).to_json_best_effort()), changes.RESUMABLE_CHANGES
      )
      == {}
  )


def test_unknown_fields_are_named_with_the_known_ones(workspace):
  config = json.loads(tiny_config(workspace).to_json_best_effort())
  config["data"]["tempreature"] = 3.0
  config["train_streams"][1]["langauge"] = "aa"
  config["tasks"]["tag"]["labelz"] = []
  with pytest.raises(ConfigError) as e:
    decode(config)
  message = str(e.value)
  assert "config.data: unknown field(s) ['tempreature']; known: [" in message
  assert "'temperature'" in message
  assert "config.train_streams[1]: unknown field(s) ['langauge']" in message
  assert "config.tasks.tag: unknown field(s) ['labelz']" in message


def test_pure_checks_need_no_disk(workspace):
  """`parse` (decode + pure checks) accepts a config whose files do not exist; only
  `environment.parse` looks at the disk."""
  config = tiny_config(workspace)
  config.train_streams[0]["source"]["path"] = "/nonexistent/train.iob2"
  parse(config)
  config.data.temperature = 0.0
  with pytest.raises(ConfigError, match=r"config.data.temperature: must be a number > 0"):
    parse(config)


def test_sections_are_frozen_and_typed():
  spec = decode({"data": {"weights": [1, 2]}, "mesh": {"shape": [2, -1, 1]}})
  assert spec.data.weights == (1, 2) and spec.mesh.shape == (2, -1, 1)
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.data.batch_size = 4  # type: ignore[misc]


def test_resume_refuses_a_changed_field_and_names_it(workspace, tmp_path):
  config = tiny_config(workspace)
  run.save_config(config, str(tmp_path))
  config.total_steps = 40  # resumable
  run.check_saved_config(config, str(tmp_path))
  config.data.temperature = 2.0
  with pytest.raises(ConfigError, match=r"config.data.temperature: 5.0 \(saved\) -> 2.0"):
    run.check_saved_config(config, str(tmp_path))


@pytest.mark.parametrize("method", ["hyperx", "task_adapters"])
def test_resume_allows_the_hypernetworks_fields_to_change_for_other_methods(
    workspace, tmp_path, method
):
  config = tiny_config(workspace)
  config.method = method
  run.save_config(config, str(tmp_path))
  config.hyperx.projected_dim = 2 * config.hyperx.projected_dim
  config.hyperx.typology_features = ["inventory_knn"]  # a list field: its items are the leaves
  if method == "hyperx":
    with pytest.raises(ConfigError, match=r"projected_dim[\s\S]*typology_features\[0\]"):
      run.check_saved_config(config, str(tmp_path))
  else:
    run.check_saved_config(config, str(tmp_path))  # the static adapters never read them
  config.adapter.bottleneck = 2 * config.adapter.bottleneck  # every method reads it
  with pytest.raises(ConfigError, match=r"config.adapter.bottleneck"):
    run.check_saved_config(config, str(tmp_path))
