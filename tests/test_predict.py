"""predict: labels files with a trained run; its predictions score exactly what evaluation
scored on the same files, for trained and zero-shot pairs, in every input format."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from hyperx_jax import predict

from helpers import make_workspace, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run trained 20 steps on tag:aa, pair:aa, pair:bb; its final eval results."""
  from hyperx_jax import train

  workspace = make_workspace(tmp_path_factory.mktemp("predict_ws"))
  workdir = str(tmp_path_factory.mktemp("predict_run"))
  results = train.train_and_evaluate(tiny_config(workspace, tasks="tag+pair", steps=20), workdir)
  return workspace, workdir, results


def _iob2_gold(path) -> list[list[tuple[str, str]]]:
  text = open(path).read().strip()
  return [[tuple(line.split("\t")) for line in block.split("\n")] for block in text.split("\n\n")]


def _accuracy(pairs) -> float:
  pairs = list(pairs)
  return sum(a == b for a, b in pairs) / len(pairs)


def test_token_predictions_score_what_evaluation_scored(trained, tmp_path):
  workspace, workdir, results = trained
  for lang in ("aa", "bb"):  # tag:bb is zero-shot
    source = workspace / "data" / f"tag_{lang}_test.iob2"
    out = tmp_path / f"{lang}.iob2"
    summary = predict.predict_file(workdir, "tag", lang, str(source), str(out))
    assert summary["zero_shot"] == (["bb"] if lang == "bb" else []) and summary["step"] == 20
    gold, predicted = _iob2_gold(source), _iob2_gold(out)
    assert [[w for w, _ in s] for s in predicted] == [[w for w, _ in s] for s in gold]
    accuracy = _accuracy((p[1], g[1]) for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs))
    assert accuracy == pytest.approx(results[f"tag:{lang}"]["accuracy"], abs=1e-9)


def test_pair_predictions_score_what_evaluation_scored(trained, tmp_path):
  workspace, workdir, results = trained
  source = workspace / "data" / "pair_cc_test.jsonl"  # zero-shot: cc has no pair data
  out = tmp_path / "cc.jsonl"
  summary = predict.predict_file(workdir, "pair", "cc", str(source), str(out), batch_size=16)
  assert summary["zero_shot"] == ["cc"] and summary["examples"] == 16
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  gold = [json.loads(line) for line in source.read_text().splitlines()]
  added = ("prediction", "probabilities", "lang", "vector")
  assert [{k: v for k, v in r.items() if k not in added} for r in rows] == gold
  assert all(r["lang"] == "cc" and r["vector"] == "its own row (never trained)" for r in rows)
  for r in rows:  # a distribution over the labels, its argmax the prediction
    assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert r["prediction"] == max(r["probabilities"], key=r["probabilities"].get)
  accuracy = _accuracy((r["prediction"], r["label"]) for r in rows)
  assert accuracy == pytest.approx(results["pair:cc"]["accuracy"], abs=1e-9)


def test_conllu_and_text_carry_the_same_predictions(trained, tmp_path):
  workspace, workdir, _ = trained
  sentences = [[w for w, _ in s] for s in _iob2_gold(workspace / "data" / "tag_bb_test.iob2")]
  expected = _iob2_gold(
      _predict(workdir, tmp_path, "in.iob2", "\n\n".join("\n".join(s) for s in sentences) + "\n")
  )
  conllu = ["# sent_id = 1", "1-2\tw1w2\t_\t_\t_\t_\t_\t_\t_\t_"]
  for s in sentences:
    conllu += [f"{i}\t{w}\t_\tNOUN\t_\t_\t0\troot\t_\t_" for i, w in enumerate(s, 1)] + [""]
  out = _predict(workdir, tmp_path, "in.conllu", "\n".join(conllu) + "\n").read_text()
  lines = out.splitlines()
  assert lines[:2] == conllu[:2]  # comments and ranges kept
  words = [
      line.split("\t")
      for line in lines
      if line and line[0].isdigit() and "-" not in line.split("\t")[0]
  ]
  assert [(c[1], c[3]) for c in words] == [wt for s in expected for wt in s]
  assert all(c[6:8] == ["0", "root"] for c in words)  # the other columns are untouched
  text = _predict(workdir, tmp_path, "in.txt", "\n".join(" ".join(s) for s in sentences) + "\n")
  assert text.read_text().splitlines() == [" ".join(f"{w}/{t}" for w, t in s) for s in expected]


def _predict(workdir, tmp_path, name, content, lang="bb", **kwargs):
  source = tmp_path / name
  source.write_text(content)
  out = tmp_path / ("out_" + name)
  predict.predict_file(workdir, "tag", lang, str(source), str(out), **kwargs)
  return out


def test_words_past_max_length_are_marked_and_counted(trained, tmp_path):
  workspace, workdir, _ = trained
  source = tmp_path / "long.txt"
  source.write_text("w1 w2 w3 w4 w5 w6 w7 w8\nw1 w2\n")
  out = tmp_path / "long_out.txt"
  summary = predict.predict_file(workdir, "tag", "aa", str(source), str(out), max_length=6)
  assert summary["words"] == 10 and summary["words_without_prediction"] == 4
  first, second = [line.split() for line in out.read_text().splitlines()]
  assert [w.split("/")[1] for w in first[4:]] == ["_"] * 4
  assert all(w.split("/")[1] != "_" for w in first[:4] + second)


@pytest.mark.parametrize(
    "task, lang, name, content, match",
    [
        (
            "nope",
            "aa",
            "x.iob2",
            "w1\n",
            r"--task='nope' is not in the run; known: \['pair', 'tag'\]",
        ),
        (
            "tag",
            "zz",
            "x.iob2",
            "w1\n",
            r"language 'zz' is not one of the run's \['aa', 'bb', 'cc'\], and the run has no "
            r"vector for a new language",
        ),
        ("tag", "aa", "x.jsonl", "{}\n", r"x.jsonl:1: expected an object with string fields"),
        ("tag", None, "x.jsonl", '{"tokens": ["w1"]}\n', r"example 1 names no language"),
        ("tag", "aa", "x.md", "w1\n", r"cannot tell the format from the extension"),
        (
            "pair",
            "aa",
            "x.jsonl",
            '{"premise": "w1", "hypothesis": "w2"}\n{"premise": 1}\n',
            r'x.jsonl:2: expected an object with string fields "premise" and "hypothesis" or '
            r'"sentence1" and "sentence2"',
        ),
        ("tag", "aa", "x.iob2", "w1\tT0\textra\n", r"x.iob2:1: expected a word, optionally"),
    ],
)
def test_bad_requests_fail_before_the_model_is_built(
    trained, tmp_path, monkeypatch, task, lang, name, content, match
):
  from hyperx_jax import run

  _, workdir, _ = trained
  source = tmp_path / name
  source.write_text(content)
  monkeypatch.setattr(run, "restore", lambda *a, **k: pytest.fail("restored the run"))
  with pytest.raises((predict.PredictError, ValueError), match=match):
    predict.predict_file(workdir, task, lang, str(source), str(tmp_path / "out"))


def test_official_nli_field_names_are_read(trained, tmp_path):
  _, workdir, _ = trained
  source = tmp_path / "x.jsonl"
  source.write_text('{"sentence1": "w1 w2", "sentence2": "w1 w2", "gold_label": "same"}\n')
  document = predict.sources.FORMATS["jsonl"].read_document(str(source))
  assert document.examples == [{"premise": "w1 w2", "hypothesis": "w1 w2"}]
  predict.predict_file(workdir, "pair", "aa", str(source), str(tmp_path / "o.jsonl"))
  assert json.loads((tmp_path / "o.jsonl").read_text())["gold_label"] == "same"


def test_cli_labels_a_file_and_refuses_to_overwrite_its_input(trained, tmp_path):
  workspace, workdir, _ = trained
  source = str(workspace / "data" / "pair_aa_test.jsonl")
  out = str(tmp_path / "pred.jsonl")
  command = [
      sys.executable,
      "-m",
      "hyperx_jax.predict",
      f"--workdir={workdir}",
      "--task=pair",
      "--lang=aa",
      f"--input={source}",
  ]
  done = subprocess.run(
      command + [f"--out={out}"], capture_output=True, text=True, cwd=os.getcwd(), timeout=600
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert "16 examples of pair in ['aa'] ->" in done.stdout
  assert len(open(out).read().splitlines()) == 16
  before = open(source).read()
  refused = subprocess.run(
      command + [f"--out={source}"], capture_output=True, text=True, timeout=600
  )
  assert refused.returncode != 0 and "is the input file" in refused.stderr
  assert open(source).read() == before


def test_mixed_languages_in_one_pass_equal_one_language_at_a_time(trained, tmp_path):
  """A JSON-lines file mixing aa and bb (bb zero-shot), labelled in one pass with batches that
  hold both: the same tags as labelling each language's sentences on their own."""
  workspace, workdir, _ = trained
  per_language = {}
  for lang in ("aa", "bb"):
    gold = _iob2_gold(workspace / "data" / f"tag_{lang}_test.iob2")
    sentences = [[w for w, _ in s] for s in gold]
    text = "\n\n".join("\n".join(s) for s in sentences) + "\n"
    tagged = _iob2_gold(_predict(workdir, tmp_path, f"{lang}.iob2", text, lang=lang))
    per_language[lang] = list(zip(sentences, tagged))
  interleaved = [x for pair in zip(per_language["aa"], per_language["bb"]) for x in pair]
  langs = ["aa", "bb"] * (len(interleaved) // 2)
  source = tmp_path / "mixed.jsonl"
  source.write_text(
      "".join(json.dumps({"tokens": s, "lang": l}) + "\n" for (s, _), l in zip(interleaved, langs))
  )
  summary = predict.predict_file(
      workdir, "tag", None, str(source), str(tmp_path / "out.jsonl"), batch_size=8
  )
  assert summary["languages"] == {"aa": "its own (trained)", "bb": "its own (trained)"}
  rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [r["lang"] for r in rows] == langs
  for row, (_, tagged) in zip(rows, interleaved):
    assert row["prediction"] == [t for _, t in tagged]
    assert len(row["probabilities"]) == len(row["tokens"])


def test_standard_input_to_standard_output(trained):
  _, workdir, _ = trained
  done = subprocess.run(
      [sys.executable, "-m", "hyperx_jax.predict", f"--workdir={workdir}", "--task=tag"],
      input='{"text": "w1 w2 w3", "lang": "cc"}\n{"tokens": ["w4"], "lang": "aa"}\n',
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  first, second = [json.loads(line) for line in done.stdout.splitlines()]
  assert len(first["prediction"]) == 3 and first["vector"] == "its own row (never trained)"
  assert set(first["probabilities"][0]) == {"T0", "T1", "T2"} and second["lang"] == "aa"
  assert "2 examples of tag in ['aa', 'cc']; zero-shot in ['cc']" in done.stderr


def test_the_documented_predictor_example_runs(trained):
  """docs/usage.md's Predictor example, as written, on this run."""
  _, workdir, _ = trained
  page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()
  code = re.search(r"<!-- predictor example -->\n```python\n(.*?)```", page, re.S).group(1)
  code = re.sub(r"^RUN, TASK = .*$", f'RUN, TASK = {workdir!r}, "tag"', code, flags=re.M)
  code = code.replace('["Bugün", "hava", "güzel"]', '["w1", "w2", "w3"]').replace('"tr"', '"aa"')
  code = code.replace('"Il fait beau"', '"w5 w6"').replace('"fr"', '"bb"')
  scope = {}
  exec(code, scope)  # pylint: disable=exec-used
  results = scope["results"]
  assert [r["lang"] for r in results] == ["aa", "bb"] and len(results[0]["prediction"]) == 3
