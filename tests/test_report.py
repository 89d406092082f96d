"""report.py: the files it writes, their content, and atomic replacement."""

import csv
import io
import json

import matplotlib.image
import pytest

from hyperx_jax import report

RESULTS = {
    "xnli:en": {"accuracy": 0.80, "zero_shot": False},
    "xnli:tr": {"accuracy": 0.70, "zero_shot": True},
    "xnli:ar": {"accuracy": 0.60, "zero_shot": True},
    "ner:en": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "zero_shot": False},
    "ner:tr": {"precision": 0.25, "recall": 0.5, "f1": 1 / 3, "zero_shot": True},
}


def test_write_results_writes_all_files(tmp_path):
  paths = report.write_results(tmp_path, RESULTS)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "results.csv",
      "results.json",
      "results.md",
      "results.png",
  ]
  assert {k: p.name for k, p in paths.items()}["png"] == "results.png"
  assert json.loads((tmp_path / "results.json").read_text()) == RESULTS


def test_csv_content(tmp_path):
  report.write_results(tmp_path, RESULTS)
  rows = list(csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text())))
  assert list(rows[0]) == [
      "task",
      "language",
      "zero_shot",
      "is_average",
      "accuracy",
      "precision",
      "recall",
      "f1",
  ]
  got = [(r["task"], r["language"], r["zero_shot"], r["is_average"]) for r in rows]
  assert got == [
      ("xnli", "en", "False", "False"),
      ("xnli", "avg", "False", "True"),
      ("xnli", "ar", "True", "False"),
      ("xnli", "tr", "True", "False"),
      ("xnli", "avg", "True", "True"),
      ("ner", "en", "False", "False"),
      ("ner", "avg", "False", "True"),
      ("ner", "tr", "True", "False"),
      ("ner", "avg", "True", "True"),
  ]
  xnli_zero_avg = rows[4]
  assert float(xnli_zero_avg["accuracy"]) == pytest.approx(0.65)
  assert xnli_zero_avg["f1"] == ""
  assert float(rows[5]["f1"]) == pytest.approx(2 / 3)


def test_markdown_content(tmp_path):
  report.write_results(tmp_path, RESULTS, method="Hyper-X")
  text = (tmp_path / "results.md").read_text()
  lines = text.splitlines()
  assert lines[0] == "# Hyper-X results"
  assert lines[2] == "| task:lang | setting | accuracy (%) | precision (%) | recall (%) | f1 (%) |"
  assert "| xnli:en | seen | 80.00 | - | - | - |" in lines
  assert "| xnli:tr | zero-shot | 70.00 | - | - | - |" in lines
  assert "| **xnli: average** | **zero-shot (avg)** | **65.00** | **-** | **-** | **-** |" in lines
  assert "| ner:tr | zero-shot | - | 25.00 | 50.00 | 33.33 |" in lines


def test_format_table_is_aligned():
  lines = report.format_table(RESULTS).splitlines()
  assert len({len(line.rstrip()) for line in lines[:2]}) == 1
  assert lines[0].split()[:2] == ["task:lang", "setting"]
  assert any(line.startswith("ner:tr") and line.rstrip().endswith("33.33") for line in lines)


def test_png_is_a_valid_image(tmp_path):
  report.write_results(tmp_path, RESULTS, chance_accuracy={"xnli": 1 / 3})
  data = (tmp_path / "results.png").read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  image = matplotlib.image.imread(tmp_path / "results.png")
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200


def test_chart_values_averages_chance_and_shared_axes():
  results = {
      **RESULTS,
      "pos:tr": {"accuracy": 0.9, "zero_shot": False},
      "pos:ar": {"accuracy": 0.4, "zero_shot": True},
  }
  fig = report.figure(results, chance_accuracy={"xnli": 1 / 3, "ner": 0.5})
  xnli, ner, pos = fig.axes
  bars = {
      ax.get_title(): {
          t.get_text(): p.get_height() for t, p in zip(ax.get_xticklabels(), ax.patches)
      }
      for ax in fig.axes
  }
  # xnli: en seen, ar / tr zero-shot; one seen language has no average bar of its own.
  assert bars["xnli"] == pytest.approx({"en": 80, "ar": 60, "tr": 70, "avg 0-shot": 65})
  assert bars["ner"] == pytest.approx({"en": 200 / 3, "tr": 100 / 3})  # its main metric: f1
  labels = [t.get_text() for t in xnli.texts]
  assert labels == ["80.0", "60.0", "70.0", "65.0"]  # the value on each bar
  assert [line.get_ydata()[0] for line in xnli.lines] == pytest.approx([100 / 3])
  assert not ner.lines  # f1 has no chance level here; the 0.5 given is for accuracy
  assert not pos.lines  # no chance level given for pos
  # One y-axis per metric: the two accuracy panels share theirs; f1 has its own.
  assert xnli.get_shared_y_axes().joined(xnli, pos)
  assert not xnli.get_shared_y_axes().joined(xnli, ner)
  assert xnli.get_ylim() == pos.get_ylim() == (0, 108)


def test_provenance_is_saved_and_both_file_kinds_read_back(tmp_path):
  about = {
      "step": 20,
      "method": "hyperx",
      "seed": 1,
      "config_sha256": "ab" * 32,
      "code": {"version": "0.1.0"},
  }
  counted = {k: {**v, "examples": 10} for k, v in RESULTS.items()}
  report.write_results(tmp_path, counted, provenance=about)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["xnli:en"] == {"accuracy": 0.80, "zero_shot": False, "examples": 10}
  assert report.from_file(saved) == (counted, about)
  assert report.from_file(RESULTS) == (RESULTS, None)  # a file from before provenance
  assert "step 20, method hyperx, seed 1" in (tmp_path / "results.md").read_text()
  assert report.metric_names(counted) == ["accuracy", "precision", "recall", "f1"]
  with pytest.raises(ValueError, match="must be an object"):
    report.from_file({**RESULTS, "provenance": 3})


def test_failure_mid_write_keeps_previous_results(tmp_path, monkeypatch):
  report.write_results(tmp_path, RESULTS)
  before = (tmp_path / "results.json").read_text()

  def failing_dump(obj, f, **kwargs):
    f.write(json.dumps(obj, **kwargs)[:20])  # a partial write, then the disk fills up
    raise OSError("No space left on device")

  monkeypatch.setattr(report.json, "dump", failing_dump)
  with pytest.raises(OSError, match="No space"):
    report.write_results(tmp_path, {"xnli:en": {"accuracy": 0.1, "zero_shot": False}})
  assert (tmp_path / "results.json").read_text() == before
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"xnli-en": {"accuracy": 1.0}}, "task:lang"),
        ({"xnli:en": {"accuracy": "high"}}, r"results\['xnli:en'\]\['accuracy'\]"),
        ({"xnli:en": {"accuracy": 1.0, "zero_shot": "no"}}, "must be a bool"),
        ({"xnli:en": {"accuracy": 1.0, "examples": 2.5}}, "must be a count"),
        ({"xnli:en": {"accuracy": 1.0}, "provenance": {}}, "task:lang"),  # not a pair's entry
    ],
)
def test_bad_results_are_rejected_before_writing(tmp_path, bad, match):
  with pytest.raises(ValueError, match=match):
    report.write_results(tmp_path, bad)
  assert not list(tmp_path.iterdir())
