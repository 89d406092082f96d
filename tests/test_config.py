"""Config files build and validate; bad configs fail before compilation, naming the field."""

from __future__ import annotations

import json
import math
import os
import pathlib

import pytest

from hyperx_jax import sharding, train
from hyperx_jax.config import ConfigError, common, decode, environment, vocabulary

from configs import demo, mixed, ner, ner_pos, pos, tiny, xnli
from helpers import tiny_config


@pytest.mark.parametrize(
    "module,arg",
    [
        (xnli, None),
        (xnli, "size=large,method=task_adapters,runlocal"),
        (ner, "method=madx"),
        (pos, "size=xl"),
        (ner, "size=xxl"),
        (mixed, None),
        (pos, "runlocal"),
    ],
)
def test_configs_build_and_validate(module, arg):
  config = module.get_config(arg)
  fixed = [n for n in config.mesh.shape if n != -1]
  devices = max(8, math.prod(fixed))  # xl / xxl fix fsdp and tensor axes
  environment.parse(config, devices)
  assert config.method in vocabulary.METHODS
  assert config.train_streams and config.eval_streams


@pytest.mark.parametrize("module", [xnli, ner, pos, mixed])
def test_xlmr_configs_default_to_the_per_task_recipe_and_keep_the_papers(module):
  c = module.get_config()
  assert (c.optim.per_task_state, c.hyperx.unit_projection) == ("^(adapters|encoder)/", True)
  paper = module.get_config("recipe=paper")
  assert (paper.optim.per_task_state, paper.hyperx.unit_projection) == (None, False)
  paper.optim.per_task_state, paper.hyperx.unit_projection = c.optim.per_task_state, True
  assert paper.to_dict() == c.to_dict()  # the recipe sets those two fields, nothing else


def test_the_offline_settings_use_the_measured_adapter_sizes():
  for config in (demo.get_config(), ner_pos.get_config()):
    assert (config.adapter.bottleneck, config.hyperx.projected_dim) == (64, 256)


def test_xnli_has_the_paper_hyperparameters():
  c = xnli.get_config()
  assert (c.optim.lr, c.optim.warmup_steps, c.total_steps, c.data.batch_size) == (
      1e-4,
      4000,
      100_000,
      32,
  )
  assert (c.data.max_length, c.seed, c.adapter.bottleneck, c.hyperx.projected_dim) == (
      256,
      123,
      256,
      192,
  )
  assert c.model.checkpoint == "FacebookAI/xlm-roberta-base"
  tests = [s for s in c.eval_streams if s["role"] == "test"]
  assert [s["lang"] for s in tests] == list(common.XNLI_LANGUAGES)
  assert len(common.XNLI_LANGUAGES) == 15
  # XTREME's protocol: the checkpoint is selected on English dev data only.
  (dev,) = [s for s in c.eval_streams if s["role"] == "dev"]
  assert (dev["lang"], dev["source"]["split"]) == ("en", "validation")
  assert c.checkpoint.best_metric == "xnli:en/accuracy"


@pytest.mark.parametrize(
    "module,arg,packing,rows",
    [
        (pos, None, 8, 16),
        (ner, "size=large", 8, 16),
        (pos, "runlocal", 0, 0),
        (xnli, None, 0, 0),
        (mixed, None, 8, 16),
        (mixed, "runlocal", 0, 0),
    ],
)
def test_token_tasks_pack_where_it_saves_rows(module, arg, packing, rows):
  """32 sentences x 64 tokens of room / 128 = 16 rows; runlocal's 8 x 64 / 64 = 8 saves none."""
  c = module.get_config(arg)
  assert (c.data.packing, c.data.packed_rows) == (packing, rows)
  c.data.max_length = 256  # 64 tokens of room a sentence: a quarter of the rows
  common.set_packing(c)
  assert (c.data.packing, c.data.packed_rows) == (8, c.data.batch_size // 4)


@pytest.mark.parametrize("module", [ner, pos, mixed])
def test_selection_is_on_english_dev_data(module):
  c = module.get_config()
  (dev,) = [s for s in c.eval_streams if s.get("role") == "dev"]
  assert (dev["lang"], dev["source"]["split"]) == ("en", "validation")
  assert c.checkpoint.best_metric.startswith(f"{dev['task']}:en/")
  assert all(
      s["role"] == "test" and s["source"]["split"] == "test" for s in c.eval_streams if s is not dev
  )


def test_roles_are_checked(workspace):  # noqa: F811
  bad = tiny_config(workspace)
  bad.eval_streams[0]["role"] = "validation"
  bad.train_streams[0]["role"] = "test"
  bad.eval_streams.append({**bad.eval_streams[1]})
  bad.checkpoint.best_metric = "pair:cc/accuracy"
  bad.eval_streams[3]["role"] = "test"  # pair:cc
  _expect(
      bad,
      "config.eval_streams[0].role: 'validation' is not one of ['dev', 'test']",
      "config.train_streams[0].role: only evaluation streams have a role",
      "config.eval_streams: these (task, language, role) appear more than once: "
      "[('tag', 'bb', 'dev')]",
      "config.checkpoint.best_metric: 'pair:cc/accuracy' is a test pair's metric",
  )


def test_mixed_tests_the_missing_pairs():
  c = mixed.get_config()
  trained = {(s["task"], s["lang"]) for s in c.train_streams}
  assert {("ner", "en"), ("pos", "en"), ("pos", "tr"), ("ner", "ar")} <= trained
  evaluated = {(s["task"], s["lang"]) for s in c.eval_streams}
  assert {("ner", "tr"), ("pos", "ar")} <= evaluated - trained


def test_parse_arg_types_and_errors():
  arg = common.parse_arg("size=large,runlocal,k=8", size="base", runlocal=False, k=100)
  assert (arg.size, arg.runlocal, arg.k) == ("large", True, 8)
  with pytest.raises(ValueError, match=r"'sise' .*known: \['k', 'runlocal', 'size'\]"):
    common.parse_arg("sise=large", size="base", runlocal=False, k=1)
  with pytest.raises(ValueError, match="unknown size"):
    xnli.get_config("size=huge")
  with pytest.raises(ValueError, match="unknown method"):
    xnli.get_config("method=lora")


def test_method_sets_trainable_rules():
  assert xnli.get_config("method=full_finetune").trainable == ((".*", True),)
  rules = xnli.get_config().trainable
  assert tuple(rules[-1]) == ("^encoder/", False)


def _expect(config, *fields):
  with pytest.raises(ConfigError) as e:
    environment.parse(config, 8)
  for field in fields:
    assert field in str(e.value), str(e.value)


def test_bad_configs_name_the_field(workspace):  # noqa: F811
  c = tiny_config(workspace)
  environment.parse(c, 8)

  bad = tiny_config(workspace)
  bad.train_streams[0]["task"] = "nope"
  _expect(bad, "config.train_streams[0].task: unknown task 'nope'", "'mlm', 'pair', 'tag'")

  bad = tiny_config(workspace)
  bad.eval_streams[1]["lang"] = "zz"
  _expect(bad, "config.eval_streams[1].lang: 'zz' is not in config.languages")

  bad = tiny_config(workspace, batch=12)
  _expect(bad, "config.data.batch_size: 12 is not divisible by the data-parallel mesh size 8")

  bad = tiny_config(workspace)
  bad.train_streams[1]["source"]["path"] = "/nonexistent/train.jsonl"
  _expect(bad, "config.train_streams[1].source.path: '/nonexistent/train.jsonl' does not exist")

  bad = tiny_config(workspace)
  bad.method = "lora"
  _expect(bad, "config.method: 'lora' is not one of ['hyperx', 'task_adapters', 'madx'")

  bad = tiny_config(workspace, mesh="3+1+1")
  _expect(bad, "config.mesh.shape")

  bad = tiny_config(workspace)
  bad.tasks.tag.kind = "tagging"
  bad.checkpoint.best_metric = "tag:zz/accuracy"
  _expect(bad, "config.tasks.tag.kind", "config.checkpoint.best_metric")

  bad = tiny_config(workspace)  # a metric the pair never reports: the best step is arbitrary
  bad.checkpoint.best_metric = "tag:aa/entity_f1"
  _expect(
      bad,
      "config.checkpoint.best_metric: 'tag:aa/entity_f1' is not a metric the dev "
      "pairs report; valid names: ['pair:aa/accuracy', 'pair:cc/accuracy', "
      "'tag:aa/accuracy', 'tag:aa/f1', 'tag:bb/accuracy', 'tag:bb/f1']",
  )


def test_errors_come_before_any_compilation(workspace, tmp_path, monkeypatch):  # noqa: F811
  def no_init(*args, **kwargs):
    raise AssertionError("reached sharded initialisation")

  monkeypatch.setattr(sharding, "sharded_init", no_init)
  bad = tiny_config(workspace, batch=12)
  with pytest.raises(ConfigError, match="config.data.batch_size"):
    train.train_and_evaluate(bad, str(tmp_path / "run"))
  bad = tiny_config(workspace)
  bad.trainable = [("^adapters/", True), ("^heads/", True)]  # the encoder is not covered
  with pytest.raises(ConfigError, match=r"(?s)config.trainable .*encoder/layers/ffn_in/kernel"):
    train.train_and_evaluate(bad, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_tiny_config_rejects_unknown_tasks():
  with pytest.raises(ValueError, match="unknown \\['pos'\\]"):
    tiny.get_config("tasks=tag+pos")


def test_fields_added_since_a_run_started_resume_at_their_old_meaning(workspace, tmp_path):  # noqa: F811
  """config.json written before `data.packing`, `data.packed_rows` and a pair task's `pooling`
  existed: the same run resumes with them at the values their absence meant, and is refused at
  any other value."""
  from hyperx_jax import run

  config = tiny_config(workspace)
  pair_task = next(name for name, t in config.tasks.items() if t["kind"] == vocabulary.PAIR)
  config.data.packing = vocabulary.PACKING_OFF
  config.tasks[pair_task]["pooling"] = "cls"
  saved = json.loads(config.to_json_best_effort())
  del saved["data"]["packing"], saved["data"]["packed_rows"]
  del saved["tasks"][pair_task]["pooling"]
  (tmp_path / run.CONFIG_FILE).write_text(json.dumps(saved))
  run.check_saved_config(config, str(tmp_path))  # their old meaning: no change
  config.data.packing, config.data.packed_rows = 4, 4
  config.tasks[pair_task]["pooling"] = "mean"
  with pytest.raises(ConfigError) as error:
    run.check_saved_config(config, str(tmp_path))
  assert "config.data.packing: '<absent>' (saved) -> 4" in str(error.value)
  assert "config.data.packed_rows: '<absent>' (saved) -> 4" in str(error.value)
  assert f"config.tasks.{pair_task}.pooling: '<absent>' (saved) -> 'mean'" in str(error.value)


def test_demo_selects_on_german_dev_pairs_and_drops_mlm_on_request():
  from configs import demo

  c = demo.get_config()
  (dev,) = [s for s in c.eval_streams if s.get("role") == "dev"]
  assert (dev["task"], dev["lang"]) == ("pairs", "de")
  assert dev["source"]["path"].endswith(os.path.join("de", "dev.jsonl"))
  assert c.checkpoint.best_metric == "pairs:de/accuracy"
  assert c.eval_every_steps == c.checkpoint.every_steps == 100
  assert c.hyperx.language_source == "typology"
  assert environment.hypernet_config(
      decode(c)
  ).unit_projection  # the paper's run: off (common.get_config)
  assert not environment.hypernet_config(
      decode(demo.get_config("recipe=paper,pooling=cls,unit_projection=false"))
  ).unit_projection
  assert not common.get_config().hyperx.unit_projection
  assert [s["lang"] for s in c.train_streams if s["task"] == "mlm"] == ["ar", "es"]
  assert c.data.weights == (0.25, 0.3, 0.3, 0.075, 0.075)
  environment.parse(c, 1)
  # mlm= (none): the same languages, ar and es now untrained; the learned source reads the mean.
  bare = demo.get_config("mlm=,language_source=learned")
  assert not [s for s in bare.train_streams if s["task"] == "mlm"]
  assert bare.languages == c.languages and bare.data.weights == (0.25, 0.3, 0.3)
  assert bare.hyperx.untrained_language == "mean"
  environment.parse(bare, 1)
  assert demo.get_config("setting=one_language,mlm=es").data.weights == (0.85, 0.15)
  with pytest.raises(ValueError, match=r"mlm='fr': \['fr'\] have no masked-LM text"):
    demo.get_config("mlm=fr")


def test_the_config_reference_page_is_the_generated_one():
  """docs/config.md is written from the fields' declarations: a field added, removed or
  re-documented without regenerating it fails here."""
  from hyperx_jax.config import reference

  page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "config.md"
  assert (
      page.read_text() == reference.page()
  ), "regenerate it: python -m hyperx_jax.config.reference > docs/config.md"
