"""writers.py: event files read back record by record, JSON lines, progress line and its
training clock, the library-log filter, NaN check."""

import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import plugin_hparams_pb2

from hyperx_jax import writers

from helpers import read_events


def test_scalars_reach_event_file_and_jsonl(tmp_path):
  with writers.MetricWriter(tmp_path, is_primary=True) as writer:
    writer.write_scalars(1, {"loss/ner": 0.5, "lr": jnp.float32(1e-4)})
    writer.write_scalars(2, {"loss/ner": np.float64(0.25)})
    writer.write_text(2, "config", "batch_size: 32")
  (event_file,) = tmp_path.glob("events.out.tfevents.*")
  scalars = [
      (e.step, v.tag, v.simple_value)
      for e in read_events(event_file)
      if e.HasField("summary")
      for v in e.summary.value
      if v.HasField("simple_value")
  ]
  assert scalars == [(1, "loss/ner", 0.5), (1, "lr", pytest.approx(1e-4)), (2, "loss/ner", 0.25)]
  texts = [
      v.tag
      for e in read_events(event_file)
      if e.HasField("summary")
      for v in e.summary.value
      if v.HasField("tensor")
  ]
  assert texts and texts[0].startswith("config")
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]
  assert records[0]["scalars"] == {"loss/ner": 0.5, "lr": pytest.approx(1e-4)}
  assert all(isinstance(r["time"], float) for r in records)


def test_non_primary_writes_nothing(tmp_path):
  writer = writers.MetricWriter(tmp_path / "run", is_primary=False)
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_text(1, "note", "x")
  writer.flush()
  writer.close()
  assert not (tmp_path / "run").exists()


def test_progress_line_reports_rates_and_eta_from_the_first_line():
  progress = writers.ProgressLogger(1000, batch_size=32, start_step=50)
  # 50 steps (from step 50) in 25 training seconds: 2 steps/s, 64 ex/s, 900 left -> 450 s.
  first = progress.log(100, {"loss/ner": 0.5, "loss/xnli": 1.25, "lr": 1e-4}, 25.0)
  assert first == (
      "step 100/1000 (10.0%) | loss[ner]=0.5 loss[xnli]=1.25 | lr=1.00e-04 | "
      "2.00 steps/s 64.0 ex/s | ETA 0:07:30"
  )
  second = progress.log(150, {"loss": 0.75}, 35.0)
  # 50 steps in 10 s: 5 steps/s, 160 examples/s, 850 steps left -> 170 s.
  assert second == "step 150/1000 (15.0%) | loss=0.75 | 5.00 steps/s 160.0 ex/s | ETA 0:02:50"
  # Packed batches report the examples they took: 5 steps/s x 30.5 examples a batch.
  third = progress.log(200, {"loss": 0.5, "examples_per_batch": 30.5}, 45.0)
  assert third.endswith("| 5.00 steps/s 152.5 ex/s | ETA 0:02:40")


def test_training_clock_leaves_out_paused_time():
  now = [100.0]
  clock = writers.TrainingClock(clock=lambda: now[0])
  now[0] = 103.0  # 3 s of training
  with clock.paused():  # e.g. an evaluation
    now[0] = 160.0
  now[0] = 162.0  # 2 s more
  assert clock.seconds() == 5.0
  with pytest.raises(RuntimeError), clock.paused():  # a failed save still counts as paused
    now[0] = 170.0
    raise RuntimeError
  assert clock.seconds() == 5.0


def _record(pathname: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


def test_library_info_logs_are_filtered_and_ours_are_kept(monkeypatch):
  handler = logging.StreamHandler()
  monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
  ours = os.path.join(os.path.dirname(writers.__file__), "train.py")
  config = os.path.join(os.path.dirname(os.path.dirname(writers.__file__)), "configs", "demo.py")
  theirs = os.path.join(os.path.dirname(jnp.__file__), "checkpoint_manager.py")
  writers.quiet_library_logs(verbose_libraries=True)
  assert handler.filter(_record(theirs, logging.INFO))  # --verbose_libraries: all pass
  writers.quiet_library_logs()
  writers.quiet_library_logs()  # idempotent
  assert len(handler.filters) == 1
  assert not handler.filter(_record(theirs, logging.INFO))
  assert handler.filter(_record(theirs, logging.WARNING))
  assert handler.filter(_record(ours, logging.INFO)) and handler.filter(
      _record(config, logging.INFO)
  )


def test_hparams_reach_the_event_file(tmp_path):
  with writers.MetricWriter(tmp_path, is_primary=True) as writer:
    writer.write_hparams({"seed": 123, "method": "hyperx", "optim.lr": 1e-3}, metrics=["loss"])
  (event_file,) = tmp_path.glob("events.out.tfevents.*")
  values = {
      v.tag: v for e in read_events(event_file) if e.HasField("summary") for v in e.summary.value
  }
  start = plugin_hparams_pb2.HParamsPluginData.FromString(
      values["_hparams_/session_start_info"].metadata.plugin_data.content
  ).session_start_info
  assert start.hparams["seed"].number_value == 123
  assert start.hparams["method"].string_value == "hyperx"
  assert start.hparams["optim.lr"].number_value == pytest.approx(1e-3)
  experiment = plugin_hparams_pb2.HParamsPluginData.FromString(
      values["_hparams_/experiment"].metadata.plugin_data.content
  ).experiment
  assert [m.name.tag for m in experiment.metric_infos] == ["loss"]


def test_write_after_close_is_an_error(tmp_path):
  writer = writers.MetricWriter(tmp_path, is_primary=True, subdir="eval")
  writer.close()
  assert (tmp_path / "eval" / "metrics.jsonl").exists()
  with pytest.raises(RuntimeError, match="after close"):
    writer.write_scalars(1, {"loss": 1.0})


def test_flush_makes_records_readable_and_a_half_written_line_is_dropped(tmp_path):
  writer = writers.MetricWriter(tmp_path, is_primary=True)
  writer.write_scalars(5, {"loss": 1.0})
  writer.flush()  # what a log step does: readable now, without close()
  assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()] == [5]
  writer.close()
  with (tmp_path / "metrics.jsonl").open("a") as f:
    f.write('{"step": 6, "ti')  # then a run killed mid-write
  with writers.MetricWriter(tmp_path, is_primary=True) as resumed:
    resumed.write_scalars(6, {"loss": 0.5})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [5, 6]
