"""What a user sees when something they gave is wrong or unusual: one message, no traceback;
a run with nothing to evaluate finishes; tags of a known other tagset name their tag_map;
what max_length cuts off is counted at start-up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from hyperx_jax import cli, evaluate, run, train
from hyperx_jax.config import vocabulary
from hyperx_jax.data import pipeline, sources
from hyperx_jax.errors import UserError
from hyperx_jax.tokenizer import load_tokenizer

from helpers import make_workspace, run_dir, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_run_without_eval_streams_finishes_and_says_so(workspace, tmp_path, caplog):
  config = tiny_config(workspace, tasks="tag", steps=2)
  config.eval_streams = []
  with caplog.at_level(logging.INFO):
    assert train.train_and_evaluate(config, run_dir(tmp_path)) == {}
  assert "no eval streams, so there is nothing to evaluate or report" in caplog.text
  assert not os.path.exists(os.path.join(run_dir(tmp_path), "results.json"))
  assert run.resolve_step(run_dir(tmp_path))[0] is None  # 'best' is the latest: no results
  with pytest.raises(UserError, match="nothing to report .* no eval streams"):
    cli.invoke(evaluate, [f"--workdir={run_dir(tmp_path)}", f"--out={tmp_path / 'eval'}"])


def test_google_universal_tags_name_their_tag_map(tmp_path):
  path = tmp_path / "google.conllu"
  path.write_text(
      "1\tgel\tgel\tVERB\t_\t_\t0\troot\t_\t_\n2\tve\tve\tCONJ\t_\t_\t1\tcc\t_\t_\n"
      "3\tde\tde\tPRT\t_\t_\t1\tadvmod\t_\t_\n\n"
  )
  config = {"task": "pos", "lang": "tr", "source": {"type": "conllu", "path": str(path)}}
  from hyperx_jax.config import decode

  spec = decode(
      {
          "tasks": {"pos": {"kind": "token_classification", "labels": list(vocabulary.UPOS_TAGS)}},
          "languages": ["tr"],
          "train_streams": [config],
      }
  )
  with pytest.raises(sources.SourceError) as e:
    pipeline.read_streams(spec.train_streams)
  message = str(e.value)
  assert f"{path}:2: word 2 've': tag 'CONJ' is not a label of task 'pos'" in message
  assert (
      "['CONJ', 'PRT'] look like the tags tag_map='google_universal_to_upos' maps to these "
      "labels"
  ) in message


def test_truncation_is_counted_at_start_up(workspace):
  """Two tag sentences of 20 words at max_length 16: each keeps 14 word pieces (16 minus <s>
  and </s>), so 6 words of each lose their label; 22 tokens keep everything."""
  from hyperx_jax.config import decode

  config = tiny_config(workspace, tasks="tag")
  spec = decode(config)
  tag = spec.train_streams[0]
  long = [{"tokens": [f"w{i}" for i in range(20)], "tags": ["T0"] * 20}] * 2
  short = [{"tokens": ["w1", "w2"], "tags": ["T0", "T1"]}] * 3
  tokenizer = load_tokenizer(spec.tokenizer_path)
  line = pipeline.truncation(tag, long + short, tokenizer, 16)
  assert line == (
      "stream tag/aa: 2 of 5 examples are longer than data.max_length = 16: 12 words lose "
      "their label; max_length 22 would keep them all, 22 keeps 99 %"
  )
  assert pipeline.truncation(tag, short, tokenizer, 16) is None


def test_a_bad_data_file_is_one_message_without_a_traceback(tmp_path):
  workspace = make_workspace(tmp_path / "ws")
  bad = workspace / "data" / "tag_aa_train.iob2"
  bad.write_text("w1\tT0\nw2\tT9\n")
  config = f"--config={REPO}/configs/tiny.py:workspace={workspace},tasks=tag,steps=2"
  args = [sys.executable, "-m", "hyperx_jax.main", config, f"--workdir={tmp_path / 'run'}"]
  done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, check=False)
  assert done.returncode == cli.USER_ERROR_STATUS, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert f"{bad}:2: word 2 'w2': tag 'T9' is not a label of task 'tag'" in done.stderr
  assert "error: bad labels in the data" in done.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
  verbose = subprocess.run(
      args + ["--verbose"], capture_output=True, text=True, cwd=REPO, check=False
  )
  assert "Traceback" in verbose.stderr and "SourceError" in verbose.stderr
