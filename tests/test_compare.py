"""compare: mean ± std over seeds per (method, pair), hand-computed; experiment's commands."""

import json
import math

import pytest
from absl import app

from hyperx_jax import cli, compare, experiment
from hyperx_jax.errors import UserError


def _run(tmp_path, method, seed, pos, pairs_tr, provenance=None):
  d = tmp_path / f"{method}_{seed}"
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps({"method": method, "seed": seed}))
  results = {
      "pos:tr": {"accuracy": pos, "f1": pos - 0.1, "zero_shot": False},
      "pairs:tr": {"accuracy": pairs_tr, "zero_shot": True},
  }
  if provenance:  # a file with provenance and example counts (report.write_results)
    results = {**{k: {**v, "examples": 100} for k, v in results.items()}, "provenance": provenance}
  (d / "results.json").write_text(json.dumps(results))
  return str(d)


def test_mean_and_sample_std_over_seeds(tmp_path):
  dirs = [
      _run(tmp_path, "hyperx", 1, 0.80, 0.60),
      _run(tmp_path, "hyperx", 2, 0.90, 0.70),
      _run(tmp_path, "task_adapters", 1, 0.85, 0.50),
  ]
  runs = [compare.load_run(d) for d in dirs]
  methods, rows, cells, zero_shot = compare.aggregate(runs)
  assert methods == ["hyperx", "task_adapters"]
  assert rows == ["pos:tr", "pairs:tr", compare.SEEN_AVERAGE, compare.ZERO_SHOT_AVERAGE]
  assert zero_shot["pairs:tr"] and not zero_shot["pos:tr"]
  pos = cells["hyperx", "pos:tr"]  # F1 is POS's main metric: 70 and 80
  assert pos.mean == pytest.approx(75.0) and pos.std == pytest.approx(math.sqrt(50.0))
  assert pos.seeds == (1, 2)
  assert cells["hyperx", compare.ZERO_SHOT_AVERAGE].mean == pytest.approx(65.0)
  assert cells["task_adapters", "pairs:tr"].std == 0.0
  table = compare.to_markdown(runs)
  assert "| pairs:tr | zero-shot | **65.0 ± 7.1** | 50.0 |" in table
  assert "Hyper-X (seeds 1,2)" in table
  # paired over seed 1 only: pos F1 70 - 75, pairs:tr 60 - 50
  assert "| Hyper-X − Task adapters |" in table
  assert "| pos:tr | -5.0 (0/1) |" in table and "| pairs:tr | +10.0 (1/1) |" in table
  out = tmp_path / "out"
  compare.write(runs, str(out))
  assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
  assert "hyperx,pairs:tr,True,65.0000,7.0711,2,1 2" in (out / "compare.csv").read_text()


def test_paired_differences_seed_by_seed():
  a = compare.Cell(0.0, 0.0, (80.0, 70.0, 90.0), (1, 2, 3))
  b = compare.Cell(0.0, 0.0, (75.0, 72.0), (1, 3))  # seed 2 missing: pairs 80-75, 90-72
  diff = compare.paired_difference(a, b)
  assert diff.seeds == (1, 3) and diff.ahead == 2
  assert diff.mean == pytest.approx(11.5) and diff.std == pytest.approx(math.sqrt(84.5))
  assert diff.text() == "+11.5 ± 9.2 (2/2)"
  assert compare.paired_difference(a, compare.Cell(0.0, 0.0, (1.0,), (7,))) is None


def test_files_with_and_without_provenance_compare_alike(tmp_path):
  about = {
      "step": 600,
      "method": "hyperx",
      "seed": 2,
      "config_sha256": "0" * 64,
      "code": {"version": "0.1.0"},
  }
  old = [
      compare.load_run(_run(tmp_path / "old", "hyperx", s, p, z))
      for s, p, z in ((1, 0.8, 0.6), (2, 0.9, 0.7))
  ]
  new = [
      compare.load_run(_run(tmp_path / "new", "hyperx", 1, 0.8, 0.6)),
      compare.load_run(_run(tmp_path / "new", "hyperx", 2, 0.9, 0.7, provenance=about)),
  ]
  assert [r.provenance for r in new] == [None, about]
  assert compare.aggregate(new) == compare.aggregate(old)
  assert compare.to_markdown(new) == compare.to_markdown(old)


def test_an_unfinished_run_is_named(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="no results.json; is it a finished run"):
    compare.load_run(str(tmp_path))


def test_experiment_commands_set_method_and_seed(tmp_path, capsys):
  assert experiment.with_method("configs/demo.py:steps=9,method=hyperx", "madx") == (
      "configs/demo.py:steps=9,method=madx"
  )
  cmd = experiment.train_command("configs/demo.py", "madx", 3, "w", ["optim.b2=0.9"])
  assert cmd[1:] == [
      "-m",
      "hyperx_jax.main",
      "--config=configs/demo.py:method=madx",
      "--config.seed=3",
      "--workdir=w/madx/seed3",
      "--config.optim.b2=0.9",
  ]
  cli.invoke(
      experiment,
      [
          "--config=configs/demo.py",
          "--methods=hyperx,madx",
          "--seeds=1",
          f"--workdir={tmp_path}",
          "--dry_run",
      ],
  )
  out = capsys.readouterr().out
  assert "[2/2] madx seed 1" in out and "language_source" not in out  # the config's own
  with pytest.raises(app.UsageError, match="unknown methods"):
    cli.invoke(experiment, ["--config=c.py", "--methods=lora", f"--workdir={tmp_path}"])


def test_bad_inputs_name_the_file(tmp_path):
  d = tmp_path / "run"
  d.mkdir()
  (d / "config.json").write_text('{"method": "hyperx", "seed": 1}')
  (d / "results.json").write_text('{"pos:tr": {"accuracy": 0.5,}')
  with pytest.raises(ValueError, match=r"results.json:1: not valid JSON"):
    compare.load_run(str(d))
  (d / "results.json").write_text('{"pos-tr": {"accuracy": 0.5}}')
  with pytest.raises(ValueError, match=r"results.json: results key 'pos-tr'"):
    compare.load_run(str(d))
  with pytest.raises(app.UsageError, match="'configs/nope.py' is not a file"):
    cli.invoke(experiment, ["--config=configs/nope.py", f"--workdir={tmp_path}"])
  with pytest.raises(app.UsageError, match="--seeds='one'"):
    cli.invoke(experiment, ["--config=configs/demo.py", "--seeds=one", f"--workdir={tmp_path}"])


def test_language_sources_are_their_own_columns(tmp_path, capsys):
  dirs = []
  for source, value in (("learned", 0.6), ("typology", 0.7), ("both", 0.8)):
    d = tmp_path / source
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps({"method": "hyperx", "seed": 1, "hyperx": {"language_source": source}})
    )
    (d / "results.json").write_text(
        json.dumps({"pairs:ja": {"accuracy": value, "zero_shot": True}})
    )
    dirs.append(str(d))
  runs = [compare.load_run(d) for d in dirs]
  assert [r.method for r in runs] == ["hyperx", "hyperx-typology", "hyperx-both"]
  table = compare.to_markdown(runs)
  assert "Hyper-X (typology) (seeds 1)" in table and "| 60.0 | 70.0 | **80.0** |" in table
  assert experiment.with_variant("configs/demo.py:held_out=ja", "hyperx-both") == (
      "configs/demo.py:held_out=ja,method=hyperx,language_source=both"
  )
  cli.invoke(
      experiment,
      [
          "--config=configs/demo.py:held_out=ja",
          "--methods=hyperx,madx",
          "--language_sources=learned,typology",
          "--seeds=1",
          f"--workdir={tmp_path}",
          "--dry_run",
      ],
  )
  out = capsys.readouterr().out
  assert "method=hyperx,language_source=learned --config.seed=1" in out  # explicit
  assert "[2/3] hyperx-typology seed 1" in out and "language_source=typology" in out
  assert f"--workdir={tmp_path}/hyperx-typology/seed1" in out and "[3/3] madx seed 1" in out
  with pytest.raises(app.UsageError, match="--language_sources='uriel'"):
    cli.invoke(
        experiment,
        ["--config=configs/demo.py", "--language_sources=uriel", f"--workdir={tmp_path}"],
    )


def test_labels_name_columns_and_a_column_holds_one_config(tmp_path, capsys):
  def run(name, seed, per_task_state, value):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(
            {
                "method": "hyperx",
                "seed": seed,
                "log_every_steps": seed,
                "optim": {"per_task_state": per_task_state},
            }
        )
    )
    (d / "results.json").write_text(
        json.dumps({"pairs:tr": {"accuracy": value, "zero_shot": True}})
    )
    return str(d)

  default = [run("a1", 1, "^adapters/", 0.6), run("a2", 2, "^adapters/", 0.8)]
  paper = [run("p1", 1, None, 0.5), run("p2", 2, None, 0.7)]
  with pytest.raises(UserError) as e:  # one column, two recipes: refused, nothing written
    cli.invoke(compare, default + paper + [f"--out={tmp_path / 'out'}"])
  error = str(e.value)
  assert "share the column 'Hyper-X'" in error and "optim.per_task_state" in error
  assert "log_every_steps" not in error and not (tmp_path / "out").exists()
  assert compare.split_label("paper=runs/x") == ("paper", "runs/x")
  assert compare.split_label(default[0]) == (None, default[0])
  cli.invoke(compare, default + [f"paper={d}" for d in paper] + [f"--out={tmp_path / 'out'}"])
  table = capsys.readouterr().out
  assert "Hyper-X (seeds 1,2) | paper (seeds 1,2) |" in table
  assert "| pairs:tr | zero-shot | **70.0 ± 14.1** | 60.0 ± 14.1 |" in table


def test_chosen_differences_are_computed_between_the_named_columns(tmp_path, capsys):
  # pos F1 (accuracy - 10): hyperx 70, 80; task_adapters 75, 65; madx 60 (seed 1 only)
  dirs = [
      _run(tmp_path, "hyperx", 1, 0.80, 0.60),
      _run(tmp_path, "hyperx", 2, 0.90, 0.70),
      _run(tmp_path, "task_adapters", 1, 0.85, 0.50),
      _run(tmp_path, "task_adapters", 2, 0.75, 0.40),
      _run(tmp_path, "madx", 1, 0.70, 0.20),
  ]
  out = f"--out={tmp_path / 'out'}"
  with pytest.raises(UserError, match=r"'hyperx:full_finetune' is not COLUMN:OTHER"):
    cli.invoke(compare, dirs + [out, "--differences=hyperx:full_finetune"])
  assert not (tmp_path / "out").exists()
  cli.invoke(compare, dirs + [out, "--differences=task_adapters:madx,hyperx:task_adapters"])
  table = capsys.readouterr().out
  assert "| task:lang | Task adapters − MAD-X | Hyper-X − Task adapters |" in table
  # task_adapters - madx over seed 1: pos 75 - 60, pairs:tr 50 - 20; hyperx - task_adapters:
  # pos (70 - 75, 80 - 65) -> +5.0 ± 14.1, pairs:tr (60 - 50, 70 - 40) -> +20.0 ± 14.1
  assert "| pos:tr | +15.0 (1/1) | +5.0 ± 14.1 (1/2) |" in table
  assert "| pairs:tr | +30.0 (1/1) | +20.0 ± 14.1 (2/2) |" in table


def test_runs_differing_only_in_their_sample_seed_share_a_column(tmp_path):
  """Few-shot's sample seeds (experiment --seed_arg=sample_seed) are seeds of one column; any
  other stream difference still splits it."""
  dirs = [_run(tmp_path, "hyperx", s, 0.8, 0.6) for s in (1, 2)]
  for d, sample_seed in zip(dirs, (1, 2)):
    stream = {"task": "pos", "lang": "tr", "max_examples": 10, "sample_seed": sample_seed}
    config = {"method": "hyperx", "seed": sample_seed, "train_streams": [stream]}
    (tmp_path / d / "config.json").write_text(json.dumps(config))
  compare.check_columns([compare.load_run(d) for d in dirs])
  config = json.loads((tmp_path / dirs[1] / "config.json").read_text())
  config["train_streams"][0]["max_examples"] = 20
  (tmp_path / dirs[1] / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError, match=r"train_streams\[0\].max_examples: 10 vs 20"):
    compare.check_columns([compare.load_run(d) for d in dirs])


@pytest.mark.parametrize("method", ["hyperx", "task_adapters"])
def test_only_hyperx_columns_split_on_the_hypernetworks_fields(tmp_path, method):
  """A changed P (a field only the hypernetwork reads) splits Hyper-X's column and not the task
  adapters': their runs before and after the change are the same model."""
  dirs = [_run(tmp_path, method, seed, 0.8, 0.6) for seed in (1, 2)]
  for seed, d, projected_dim in zip((1, 2), dirs, (64, 256)):
    config = {"method": method, "seed": seed, "hyperx": {"projected_dim": projected_dim}}
    (tmp_path / d / "config.json").write_text(json.dumps(config))
  runs = [compare.load_run(d) for d in dirs]
  if method == "hyperx":
    with pytest.raises(UserError, match=r"hyperx.projected_dim: 64 vs 256"):
      compare.check_columns(runs)
  else:
    compare.check_columns(runs)
