"""Where training and evaluation numbers go: TensorBoard, JSON lines, the console.

- `MetricWriter`: every process may call it; only the primary process (jax.process_index() ==
  0) writes. Scalars go to TensorBoard event files (tensorboardX) and to `metrics.jsonl`, one
  JSON object per line: {"step": int, "time": unix seconds, "scalars": {name: float}}.
  `flush()` makes what was written durable (the trainer calls it at every log step), so a
  killed run loses at most the records since; a run that resumes appends, so a step logged
  before the kill and again after the resume appears twice (the later record is the one kept).
  `write_text` and `write_hparams` put the run's config in TensorBoard's Text and HParams tabs.
- `TrainingClock`, `ProgressLogger`: one readable console line per call: step/total, per-task
  losses, learning rate, steps/s, examples/s and ETA, the rates over training time alone
  (evaluation, checkpoint saves and compiling run with the clock paused).
  On a terminal the same line rides on a progress bar (tqdm) that moves every step; in a log
  file or a pipe it is a plain line.
- `setup_console`: this package's lines as `HH:MM:SS message` (no thread id, no source
  location), and other libraries' INFO lines (orbax, jax, absl, ...) off the console.
- `NonFiniteError`: what the trainer raises when a loss or gradient norm is NaN/Inf.
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tqdm
from absl import logging
from etils import epath

JSONL_NAME = "metrics.jsonl"


def to_float(value: Any) -> float:
  """A Python float from a number, numpy scalar or one-element (jax) array."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"expected a scalar, got an array of shape {array.shape}")
  return float(array.reshape(()))


class NonFiniteError(FloatingPointError):
  """A training quantity became NaN or Inf."""


def _drop_partial_last_line(path: epath.Path) -> None:
  """Cuts a record left half-written by a killed run, so appends start on a line of their own."""
  if not path.exists():
    return
  data = path.read_bytes()
  whole = data.rfind(b"\n") + 1
  if whole < len(data):
    with open(path, "r+b") as f:
      f.truncate(whole)


class _JsonLines:
  """Appends lines to a local file (flushed and fsync'd on `flush`); object stores (gs://)
  cannot append, so there the whole file is rewritten from memory on flush."""

  def __init__(self, path: epath.Path):
    self.path = path
    self.remote = "://" in os.fspath(path)
    self._lines: list[str] = []
    if self.remote:
      self._lines = path.read_text().splitlines() if path.exists() else []
      self._file = None
    else:
      _drop_partial_last_line(path)
      self._file = path.open("a")

  def append(self, line: str) -> None:
    if self.remote:
      self._lines.append(line)
    else:
      self._file.write(line + "\n")

  def flush(self) -> None:
    if self.remote:
      self.path.write_text("".join(line + "\n" for line in self._lines))
    else:
      self._file.flush()
      os.fsync(self._file.fileno())

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()


class MetricWriter:
  """TensorBoard event files + metrics.jsonl under `workdir/subdir`; a no-op off the primary."""

  def __init__(self, workdir: str | os.PathLike, *, is_primary: bool, subdir: str = ""):
    self.is_primary = is_primary
    self.logdir = epath.Path(workdir) / subdir if subdir else epath.Path(workdir)
    self._tb = None
    self._jsonl = None
    if is_primary:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self.logdir.mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(logdir=os.fspath(self.logdir), flush_secs=30)
      self._jsonl = _JsonLines(self.logdir / JSONL_NAME)

  def _writes(self) -> bool:
    if self.is_primary and self._tb is None:
      raise RuntimeError(f"MetricWriter for {self.logdir} used after close()")
    return self.is_primary

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self._writes():
      return
    now = time.time()
    values = scalars_to_dict(scalars)
    for name, value in values.items():
      self._tb.add_scalar(name, value, global_step=int(step), walltime=now)
    record = {"step": int(step), "time": now, "scalars": values}
    self._jsonl.append(json.dumps(record))

  def write_text(self, step: int, tag: str, text: str) -> None:
    """A text summary (e.g. the config or the results table), shown in TensorBoard's Text tab."""
    if self._writes():
      self._tb.add_text(tag, text, global_step=int(step))

  def write_hparams(
      self, hparams: Mapping[str, Union[bool, int, float, str]], metrics: Sequence[str]
  ) -> None:
    """The run's hyperparameters for TensorBoard's HParams tab, in this run's own event file
    (tensorboardX's add_hparams would start another run), with the scalar tags `metrics` as the
    columns it compares them by."""
    if self._writes():
      from tensorboardX import summary as tb_summary  # pylint: disable=g-import-not-at-top

      for summary in tb_summary.hparams(dict(hparams), {name: 0.0 for name in metrics}):
        self._tb.file_writer.add_summary(summary)

  def flush(self) -> None:
    if self._writes():
      self._tb.flush()
      self._jsonl.flush()

  def close(self) -> None:
    if self.is_primary and self._tb is not None:
      self._tb.close()
      self._jsonl.close()
      self._tb = self._jsonl = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class TrainingClock:
  """Seconds spent training: wall time since creation minus the time spent inside `paused()`
  (evaluation, checkpoint saves, compiling)."""

  def __init__(self, clock=time.monotonic):
    self._clock = clock
    self._start = clock()
    self._paused = 0.0

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    start = self._clock()
    try:
      yield
    finally:
      self._paused += self._clock() - start

  def seconds(self) -> float:
    return self._clock() - self._start - self._paused


class ProgressLogger:
  """Console progress. `log(step, scalars, train_seconds)` prints and returns one line such as

      step 200/10000 (2.0%) | loss[ner]=0.412 loss[xnli]=1.05 | lr=1.00e-04 | 3.10 steps/s
      99.2 ex/s | ETA 0:52:41

  Losses are the scalars named `loss` or `loss/<task>`. Rates are steps over training seconds
  (a `TrainingClock`'s) since the previous line, or since `start_step` at 0 s for the first;
  the ETA is the remaining steps at that rate.
  """

  def __init__(
      self,
      total_steps: int,
      *,
      batch_size: Optional[int] = None,
      start_step: int = 0,
      bar: Optional[bool] = None,
  ):
    """`bar`: a progress bar moved by `advance` (default: when stderr is a terminal)."""
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._last = (start_step, 0.0)  # (step, training seconds) of the previous line
    self.bar = None
    if is_terminal() if bar is None else bar:
      self.bar = tqdm.tqdm(
          total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, leave=True
      )

  def advance(self, step: int) -> None:
    """The bar to `step` (nothing without a bar)."""
    if self.bar is not None:
      self.bar.update(step - self.bar.n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()

  def _rate(self, step: int, train_seconds: float) -> float:
    last, self._last = self._last, (step, train_seconds)
    if train_seconds <= last[1] or step <= last[0]:
      return math.nan
    return (step - last[0]) / (train_seconds - last[1])

  def line(self, step: int, scalars: Mapping[str, Any], train_seconds: float) -> str:
    steps_per_s = self._rate(step, train_seconds)
    parts = [f"step {step}/{self.total_steps} ({100 * step / max(self.total_steps, 1):.1f}%)"]
    losses = {
        k.partition("/")[2] or k: to_float(v)
        for k, v in scalars.items()
        if k == "loss" or k.startswith("loss/")
    }
    if losses:
      parts.append(
          " ".join(
              f"loss[{k}]={v:.4g}" if k != "loss" else f"loss={v:.4g}"
              for k, v in sorted(losses.items())
          )
      )
    lr = next((to_float(v) for k, v in scalars.items() if k in ("lr", "learning_rate")), None)
    if lr is not None:
      parts.append(f"lr={lr:.2e}")
    if math.isfinite(steps_per_s):
      rate = f"{steps_per_s:.2f} steps/s"
      examples = scalars.get("examples_per_batch", self.batch_size)  # packed: measured
      if examples:
        rate += f" {steps_per_s * to_float(examples):.1f} ex/s"
      parts.append(rate)
      parts.append(f"ETA {_format_duration((self.total_steps - step) / steps_per_s)}")
    return " | ".join(parts)

  def log(self, step: int, scalars: Mapping[str, Any], train_seconds: float) -> str:
    text = self.line(step, scalars, train_seconds)
    if self.bar is not None:
      self.bar.set_postfix_str(text.split(" | ", 1)[-1], refresh=False)
    logging.info("%s", text)
    return text


def is_terminal() -> bool:
  """Whether the console is a terminal (progress bars) rather than a log file or a pipe."""
  return sys.stderr.isatty()


def progress_bar(iterable: Any, description: str, total: Optional[int] = None) -> Any:
  """`iterable` with a transient progress bar on a terminal; as it is elsewhere."""
  return tqdm.tqdm(
      iterable, desc=description, total=total, leave=False, disable=not is_terminal(), unit="batch"
  )


class _AboveBarsHandler(std_logging.Handler):
  """The console handler's records, formatted and filtered as it does, written through
  `tqdm.write` so that they print above the progress bars."""

  def __init__(self, console: std_logging.Handler):
    super().__init__(console.level)
    self.console = console
    for f in console.filters:
      self.addFilter(f)

  def emit(self, record: std_logging.LogRecord) -> None:
    try:
      tqdm.tqdm.write(self.console.format(record), file=sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


@contextlib.contextmanager
def console_lines_above_bars() -> Iterator[None]:
  """Log lines printed above the progress bars (not through them) while the block runs: absl's
  console handler is swapped for one that writes through tqdm (tqdm's own redirect does not
  recognise absl's handler, and would print every line twice, other libraries' INFO lines
  included)."""
  root, console = std_logging.getLogger(), logging.get_absl_handler()
  if not is_terminal() or console not in root.handlers:
    yield
    return
  above = _AboveBarsHandler(console)
  root.removeHandler(console)
  root.addHandler(above)
  try:
    yield
  finally:
    root.removeHandler(above)
    root.addHandler(console)


class ConsoleFormatter(std_logging.Formatter):
  """`09:13:22 message`; warnings and errors name their level, other libraries' lines (shown
  with --verbose) their source file and line."""

  def __init__(self):
    super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

  def format(self, record: std_logging.LogRecord) -> str:
    time_part, _, message = super().format(record).partition(" ")
    if not is_own_record(record):
      message = f"{record.filename}:{record.lineno} {message}"
    if record.levelno >= std_logging.WARNING:
      message = f"{record.levelname}: {message}"
    return f"{time_part} {message}"


def setup_console(verbose: bool = False) -> None:
  """This package's lines without thread ids and source locations, and other libraries' INFO
  lines off the console unless `verbose` (call it after absl.app has started)."""
  logging.get_absl_handler().setFormatter(ConsoleFormatter())
  quiet_library_logs(verbose)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# This package's files and the config files next to it (configs/*.py).
OWN_SOURCE_DIRS = (
    _PACKAGE_DIR + os.sep,
    os.path.join(os.path.dirname(_PACKAGE_DIR), "configs") + os.sep,
)


def is_own_record(record: std_logging.LogRecord) -> bool:
  """Logged from this package or its configs."""
  return os.path.abspath(record.pathname).startswith(OWN_SOURCE_DIRS)


class _OwnInfoOnly(std_logging.Filter):
  """Passes warnings and errors, and INFO/DEBUG records logged from OWN_SOURCE_DIRS."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or is_own_record(record)


def quiet_library_logs(verbose_libraries: bool = False) -> None:
  """Keeps other libraries' INFO and DEBUG records (orbax: dozens of lines per checkpoint; jax,
  absl) off the console; our own lines, and everyone's warnings, stay. Installed on the root
  logger's handlers (absl's included: call it after absl.app has started); a no-op when
  `verbose_libraries`."""
  if verbose_libraries:
    return
  for handler in std_logging.getLogger().handlers:
    if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
      handler.addFilter(_OwnInfoOnly())


def scalars_to_dict(scalars: Mapping[str, Any]) -> Dict[str, float]:
  """Host floats from (device) scalars, e.g. before writing or logging."""
  return {name: to_float(value) for name, value in scalars.items()}
