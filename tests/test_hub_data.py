"""Hub parquet sources (MultiNLI, XNLI, PAN-X, UD-POS) and the start-up checks of every input.

The parquet files are written here with the hub datasets' column names, types and label
encodings (hub_fixtures.py); the end-to-end test trains through `python -m hyperx_jax.main` on
them with TensorFlow made unimportable.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys

import pyarrow as pa
import pytest

from hyperx_jax.config import ConfigError, common, environment
from hyperx_jax.config.vocabulary import HUB_DATASETS
from hyperx_jax.data import pipeline
from hyperx_jax.data.sources import SourceError, read_source

import hub_fixtures as hub
from helpers import make_workspace, tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
XTREME, XTREME_REVISION = HUB_DATASETS["xtreme"]
XNLI, XNLI_REVISION = HUB_DATASETS["xnli"]


def _names(ids, names):
  return [names[i] for i in ids]


def test_local_copies_read_with_the_cards_label_names(tmp_path):
  panx = hub.write_panx(tmp_path / XTREME, "de", "train", 6)
  udpos = hub.write_udpos(tmp_path / XTREME, "German", "test", 5)
  xnli = hub.write_xnli(tmp_path / XNLI, "de", "test", 7)
  mnli = hub.write_multi_nli(tmp_path / HUB_DATASETS["multi_nli"][0], "train", 8)
  d = str(tmp_path)

  got = read_source(common.hub_source("xtreme", "PAN-X.de", "train", d))
  assert [e["tokens"] for e in got] == panx["tokens"]
  assert [e["tags"] for e in got] == [_names(t, hub.PANX_NAMES) for t in panx["ner_tags"]]
  file = hub.split_file(tmp_path / XTREME, "PAN-X.de", "train")
  assert [e["where"] for e in got] == [f"{file}: row {i}" for i in range(6)]

  got = read_source(common.hub_source("xtreme", "udpos.German", "test", d))
  assert [e["tags"] for e in got] == [_names(t, hub.UDPOS_NAMES) for t in udpos["pos_tags"]]
  for rows, dataset, config in ((xnli, "xnli", "de"), (mnli, "multi_nli", None)):
    split = "test" if config else "train"
    got = read_source(common.hub_source(dataset, config, split, d))
    assert [(e["premise"], e["hypothesis"], e["label"]) for e in got] == list(
        zip(rows["premise"], rows["hypothesis"], _names(rows["label"], hub.NLI_NAMES))
    )


def test_class_names_follow_the_files_metadata(tmp_path):
  """A file that carries its ClassLabel names (datasets writes them) is read by those names."""
  names = list(reversed(hub.NLI_NAMES))
  meta = {"info": {"features": {"label": {"names": names, "_type": "ClassLabel"}}}}
  path = hub.write_parquet(
      tmp_path / "x.parquet",
      {"premise": ["a"], "hypothesis": ["b"], "label": [0]},
      {"premise": pa.string(), "hypothesis": pa.string(), "label": pa.int64()},
      meta,
  )
  assert read_source({"type": "hf_parquet", "path": str(path)})[0]["label"] == "contradiction"


def test_bad_parquet_names_file_row_and_type(tmp_path):
  path = tmp_path / "p.parquet"
  hub.write_parquet(
      path, {"tokens": ["a b"], "ner_tags": [[0]]}, {"tokens": pa.string(), "ner_tags": hub.IDS}
  )
  with pytest.raises(
      SourceError, match=rf"{path}: column 'tokens' has type string, expected " r"list<string>"
  ):
    read_source({"type": "hf_parquet", "path": str(path)})
  hub.write_parquet(
      path,
      {"tokens": [["a"], ["b", "c"]], "ner_tags": [[0], [1, 9]]},
      {"tokens": hub.STRINGS, "ner_tags": hub.IDS},
  )
  with pytest.raises(SourceError, match=rf"{path}: row 1: ner_tags id 9 is outside the 7"):
    read_source({"type": "hf_parquet", "path": str(path)})
  hub.write_parquet(path, {"words": [["a"]]}, {"words": hub.STRINGS})
  with pytest.raises(SourceError, match=r"columns \['words'\]; expected tokens \+ ner_tags"):
    read_source({"type": "hf_parquet", "path": str(path)})
  with pytest.raises(SourceError, match=r"no files match 'PAN-X.xx/train-\*.parquet'"):
    read_source({"type": "hf_parquet", "path": str(tmp_path), "config": "PAN-X.xx"})


def test_iob2_repair_counts_and_strict_refuses(tmp_path, caplog):
  path = tmp_path / "n.parquet"
  # I-PER after O; I-LOC after B-PER; a correct B-ORG I-ORG.
  hub.write_parquet(
      path,
      {"tokens": [["a", "b", "c"], ["d", "e", "f", "g"]], "ner_tags": [[0, 2, 2], [1, 6, 3, 4]]},
      {"tokens": hub.STRINGS, "ner_tags": hub.IDS},
  )
  with caplog.at_level(logging.WARNING):
    got = read_source({"type": "hf_parquet", "path": str(path)})
  assert [e["tags"] for e in got] == [["O", "B-PER", "I-PER"], ["B-PER", "B-LOC", "B-ORG", "I-ORG"]]
  assert f"{path}: 2 I-X tags that began an entity became B-X" in caplog.text
  with pytest.raises(SourceError, match=rf"{path}: row 0: word 2 'b': I-PER follows 'O'"):
    read_source({"type": "hf_parquet", "path": str(path), "iob2": "strict"})
  text = tmp_path / "n.iob2"
  text.write_text("a\tO\nb\tB-PER\n\nc\tO\nd\tI-LOC\n")
  with pytest.raises(SourceError, match=rf"{text}:5: word 2 'd': I-LOC follows 'O'"):
    read_source({"type": "iob2", "path": str(text), "iob2": "strict"})
  assert read_source({"type": "iob2", "path": str(text)})[1]["tags"] == ["O", "B-LOC"]


def test_iob2_one_separator_per_file(tmp_path):
  path = tmp_path / "x.iob2"
  path.write_text("a O\nb B-PER\n\nc\tO\n")
  with pytest.raises(
      SourceError,
      match=rf"{path}:4: expected two columns: token and IOB2 tag, "
      r"separated by spaces as on line 1 \(one separator per file\), got 'c\\tO'",
  ):
    read_source({"type": "iob2", "path": str(path)})
  path.write_text("a O\nb B-PER\n")
  assert read_source({"type": "iob2", "path": str(path)})[0]["tags"] == ["O", "B-PER"]


CONLLU = "1\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n{}\n"
WORD = "\tx\tx\tNOUN\t_\t_\t1\tobj\t_\t_"


@pytest.mark.parametrize(
    "second, expect",
    [
        ("3" + WORD, r"expected word ID 2 \(IDs run 1, 2, 3"),
        ("1" + WORD, "expected word ID 2"),
        ("3-4\tx\t_\t_\t_\t_\t_\t_\t_\t_", "expected a multiword range starting at word 2"),
        ("2.1\tx\tx\tNOUN\t_\t_\t_\t_\t_\t_", "expected an empty node after word 1"),
    ],
)
def test_conllu_word_ids_run_from_one(tmp_path, second, expect):
  path = tmp_path / "x.conllu"
  path.write_text(CONLLU.format(second))
  with pytest.raises(SourceError, match=rf"{path}:2: {expect}"):
    read_source({"type": "conllu", "path": str(path)})


def test_conllu_range_past_the_last_word(tmp_path):
  path = tmp_path / "x.conllu"
  path.write_text("1-3\tx\t_\t_\t_\t_\t_\t_\t_\t_\n" + CONLLU.format("2" + WORD))
  with pytest.raises(
      SourceError,
      match=rf"{path}:1: multiword range ends at word 3 but the sentence has 2 words",
  ):
    read_source({"type": "conllu", "path": str(path)})


def test_jsonl_official_nli_names_language_and_custom_fields(tmp_path):
  path = tmp_path / "xnli.test.jsonl"
  rows = [
      {"language": "de", "sentence1": "a", "sentence2": "b", "gold_label": "neutral"},
      {"language": "fr", "sentence1": "c", "sentence2": "d", "gold_label": "entailment"},
      {"language": "de", "sentence1": "e", "sentence2": "f", "gold_label": "-"},
  ]
  path.write_text("\n".join(map(json.dumps, rows)) + "\n")
  got = read_source({"type": "jsonl", "path": str(path), "language": "de"})
  assert [(e["premise"], e["label"], e["where"]) for e in got] == [("a", "neutral", f"{path}:1")]
  assert len(read_source({"type": "jsonl", "path": str(path)})) == 2  # '-' rows skipped
  fields = {"premise": "p", "hypothesis": "h", "label": "y"}
  path.write_text(json.dumps({"p": "x", "h": "y", "y": 2}) + "\n")
  assert read_source({"type": "jsonl", "path": str(path), "fields": fields})[0]["label"] == 2
  path.write_text(json.dumps({"p": "x", "h": "y", "y": 2}) + "\n" + json.dumps({"p": "x"}) + "\n")
  with pytest.raises(SourceError, match=rf"{path}:2: expected an object with keys \['p', 'h', "):
    read_source({"type": "jsonl", "path": str(path), "fields": fields})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  return make_workspace(tmp_path_factory.mktemp("hub_workspace"))


def test_max_length_is_checked_against_the_checkpoints_positions(workspace):
  config = tiny_config(workspace, tasks="tag")  # checkpoint: max_position_embeddings 40
  config.data.max_length = 38
  environment.parse(config, 8)
  config.data.max_length = 39
  with pytest.raises(
      ConfigError,
      match=r"config.data.max_length: 39 exceeds the 38 "
      r"positions of the encoder \(.*checkpoint/config.json: "
      r"max_position_embeddings=40 - 2, as RoBERTa position ids start",
  ):
    environment.parse(config, 8)
  config.model.checkpoint = "FacebookAI/xlm-roberta-base"  # not local: unknown before download
  config.data.max_length = 4096
  environment.parse(config, 8)
  config.model.checkpoint = None
  with pytest.raises(ConfigError, match=r"4096 exceeds the 512 positions .*preset"):
    environment.parse(config, 8)


def test_hub_sources_need_a_pinned_revision(workspace):
  config = tiny_config(workspace, tasks="tag")
  config.train_streams[0]["source"] = {
      "type": "hf_parquet",
      "repo": XTREME,
      "config": "PAN-X.de",
      "iob2": "fix",
  }
  with pytest.raises(ConfigError) as e:
    environment.parse(config, 8)
  assert (
      "config.train_streams[0].source.revision: an hf_parquet source without a local path "
      "needs a pinned revision"
  ) in str(e.value)
  assert "config.train_streams[0].source.iob2: 'fix' is not one of ['repair', 'strict']" in str(
      e.value
  )


def test_startup_reads_and_checks_every_source_before_the_tokenizer(
    workspace, tmp_path, monkeypatch
):
  """A bad tag in the LAST sentence of a train file and a bad label in an eval file are both
  reported, with file:line, before the tokenizer or any weights load; the workdir stays."""
  from hyperx_jax import train

  data = tmp_path / "data"
  data.mkdir()
  tag_file = data / "tag_train.iob2"
  tag_file.write_text("w1\tT0\nw2\tT1\n\nw3\tT2\nw4\tT7\n")  # the last sentence, line 5
  pair_file = data / "pair_test.jsonl"
  pair_file.write_text(
      json.dumps({"premise": "w1", "hypothesis": "w2", "label": "same"})
      + "\n"
      + json.dumps({"premise": "w3", "hypothesis": "w4", "label": "equal"})
      + "\n"
  )
  config = tiny_config(workspace, tasks="tag+pair")
  config.train_streams[0]["source"] = {"type": "iob2", "path": str(tag_file)}
  config.eval_streams[2]["source"] = {"type": "jsonl", "path": str(pair_file)}

  def not_yet(*args, **kwargs):
    raise AssertionError("the tokenizer was loaded before the data were checked")

  monkeypatch.setattr(train.tokenizers, "load_tokenizer", not_yet)
  workdir = tmp_path / "run"
  with pytest.raises(SourceError) as e:
    train.Trainer(config, str(workdir))
  message = str(e.value)
  assert f"{tag_file}:5: word 2 'w4': tag 'T7' is not a label of task 'tag'" in message
  assert f"{pair_file}:2: label 'equal' is not a label of task 'pair'" in message
  assert "stream tag/aa: 1 labels outside" in message and "stream pair/aa: 1 labels" in message
  assert not workdir.exists()


def test_label_problems_cover_every_example():
  spec = pipeline.StreamSpec(
      task="ner",
      lang="de",
      kind="token_classification",
      labels=tuple(hub.PANX_NAMES),
      task_id=0,
      lang_id=0,
      source={},
  )
  examples = [{"tokens": ["a"], "tags": ["O"], "where": "f: row 0"}] * 30 + [
      {"tokens": ["a", "b"], "tags": ["O"], "where": "f: row 30"},
      {"tokens": ["a"], "tags": ["B-MISC"], "where": "f: row 31"},
  ]
  assert pipeline.label_problems(spec, examples) == [
      "f: row 30: 2 tokens but 1 tags",
      "f: row 31: word 1 'a': tag 'B-MISC' is not a label of task 'ner'",
  ]


NO_TENSORFLOW = '''
import atexit, os, sys


class HideTensorFlow:
  """Wraps a meta path finder: tensorflow is not found, as if it were not installed."""

  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return self.finder.find_spec(name, path, target)

  def __getattr__(self, name):
    return getattr(self.finder, name)


sys.meta_path[:] = [HideTensorFlow(f) for f in sys.meta_path]
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(
    "\\n".join(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))))
'''

CONFIG = """
from hyperx_jax.config import common
from configs import tiny

def get_config(arg=None):
  c = tiny.get_config("workspace={ws},tasks=tag,steps=2")
  c.tasks = {{"ner": {{"kind": "token_classification", "labels": list(common.NER_LABELS),
                      "metric": "entity_f1"}},
             "pos": {{"kind": "token_classification", "labels": list(common.UPOS_TAGS),
                      "metric": "pos"}},
             "xnli": {{"kind": "pair_classification", "labels": list(common.XNLI_LABELS),
                       "metric": "accuracy"}}}}
  c.languages = ["en", "de"]
  local = lambda *a: common.hub_source(*a, data_dir="{data}")
  cached = lambda repo, rev, config, split: {{"type": "hf_parquet", "repo": repo,
      "revision": rev, "config": config, "split": split, "cache_dir": "{cache}"}}
  c.train_streams = [
      common.stream("ner", "en", local("xtreme", "PAN-X.en", "train")),
      common.stream("xnli", "en", local("multi_nli", None, "train"))]
  c.eval_streams = [
      common.stream("ner", "de", local("xtreme", "PAN-X.de", "test")),
      common.stream("pos", "de", cached("{xtreme}", "{xtreme_rev}", "udpos.German", "test")),
      common.stream("xnli", "de", cached("{xnli}", "{xnli_rev}", "de", "test"))]
  c.checkpoint.every_steps = 2
  return c
"""


def _snapshot(cache: pathlib.Path, repo: str, revision: str) -> pathlib.Path:
  """The folder of a repository's files at `revision` in a Hugging Face hub cache."""
  return cache / f"datasets--{repo.replace('/', '--')}" / "snapshots" / revision


def test_cli_trains_on_hub_parquet_without_tensorflow(workspace, tmp_path):
  """Train: PAN-X and MultiNLI from local copies; eval: PAN-X (local), UD-POS and XNLI from a
  hub cache at the pinned revisions, offline."""
  data, cache = tmp_path / "hub", tmp_path / "hf_cache"
  hub.write_panx(data / XTREME, "en", "train", 40, seed=1)
  hub.write_panx(data / XTREME, "de", "test", 12, seed=2)
  hub.write_multi_nli(data / HUB_DATASETS["multi_nli"][0], "train", 40, seed=3)
  hub.write_udpos(_snapshot(cache, XTREME, XTREME_REVISION), "German", "test", 10, seed=5)
  hub.write_xnli(_snapshot(cache, XNLI, XNLI_REVISION), "de", "test", 9, seed=6)
  hook, fake = tmp_path / "hook", tmp_path / "site" / "tensorflow"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text("")  # an importable tensorflow, for the hook to hide
  hook.mkdir()
  (hook / "sitecustomize.py").write_text(NO_TENSORFLOW)
  config = tmp_path / "hub_config.py"
  config.write_text(
      CONFIG.format(
          ws=workspace,
          data=data,
          cache=cache,
          xtreme=XTREME,
          xtreme_rev=XTREME_REVISION,
          xnli=XNLI,
          xnli_rev=XNLI_REVISION,
      )
  )
  modules = tmp_path / "modules.txt"
  path = os.pathsep.join(map(str, (hook, fake.parent, REPO)))
  env = {
      **os.environ,
      "PYTHONPATH": path,
      "MODULES_OUT": str(modules),
      "HF_HUB_OFFLINE": "1",
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "",
  }  # one CPU device: the quickest compiles
  probe = [sys.executable, "-c", "import tensorflow"]
  assert subprocess.run(probe, env={**env, "PYTHONPATH": str(fake.parent)}).returncode == 0
  hidden = subprocess.run(probe, env=env, capture_output=True, text=True, check=False)
  assert "No module named 'tensorflow'" in hidden.stderr
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "hyperx_jax.main", f"--config={config}", f"--workdir={workdir}"],
      env=env,
      cwd=REPO,
      capture_output=True,
      text=True,
      check=False,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert modules.read_text() == ""  # no tensorflow module was imported
  results = json.loads((workdir / "results.json").read_text())
  assert set(results) >= {"ner:de", "pos:de", "xnli:de"}
  assert "stream pos/de: 10 raw examples" in result.stderr
  assert "stream xnli/de: 9 raw examples" in result.stderr
