"""Final results: results.json, a Markdown and a CSV table, and a per-language bar chart.

Input is one dict for the whole run, keyed by "task:lang":

    {"ner:en": {"precision": 0.81, "recall": 0.84, "f1": 0.82, "zero_shot": False},
     "ner:tr": {"f1": 0.61, "zero_shot": True}, ...}

Ratio metrics (accuracy, precision, recall, f1) are stored as fractions and shown in the tables
as percentages. Each task gets an average row over its seen languages and one over its
zero-shot languages. Every file is written with `fileio.atomic_write` (a temporary name renamed
into place), so an error or a kill never leaves a half-written file (or clobbers the previous
one).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from etils import epath
import numpy as np

from hyperx_jax import fileio

Results = Mapping[str, Mapping[str, Any]]

RATIO_METRICS = ("accuracy", "precision", "recall", "f1")
_METRIC_ORDER = RATIO_METRICS + ("loss",)
# The number a task is known by: XTREME reports F1 for NER and POS, accuracy for XNLI.
MAIN_METRIC_PREFERENCE = ("f1", "accuracy")
ZERO_SHOT = "zero_shot"


def split_key(key: str) -> Tuple[str, str]:
  """'ner:tr' -> ('ner', 'tr')."""
  task, sep, lang = key.partition(":")
  if not sep or not task or not lang or ":" in lang:
    raise ValueError(f"results key {key!r} is not of the form 'task:lang'")
  return task, lang


def _metrics_of(key: str, entry: Mapping[str, Any]) -> Dict[str, float]:
  if not isinstance(entry, Mapping):
    raise ValueError(f"results[{key!r}] must be a dict of metrics, got {type(entry).__name__}")
  out = {}
  for name, value in entry.items():
    if name == ZERO_SHOT:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
      raise ValueError(f"results[{key!r}][{name!r}] = {value!r} is not a number")
    out[name] = float(value)
  return out


def check_results(results: Results) -> None:
  """Raises ValueError naming the first malformed key, metric or zero_shot flag."""
  for key, entry in results.items():
    split_key(key)
    _metrics_of(key, entry)
    if not isinstance(entry.get(ZERO_SHOT, False), (bool, np.bool_)):
      raise ValueError(f"results[{key!r}]['zero_shot'] must be a bool, got {entry[ZERO_SHOT]!r}")


def metric_names(results: Results) -> List[str]:
  """All metric names, known ones first in a fixed order, others as first seen."""
  seen: List[str] = []
  for key, entry in results.items():
    seen += [m for m in _metrics_of(key, entry) if m not in seen]
  return [m for m in _METRIC_ORDER if m in seen] + [m for m in seen if m not in _METRIC_ORDER]


def main_metric(entries: Sequence[Mapping[str, Any]]) -> str:
  """The metric a task is plotted by: f1 if present, else accuracy, else its first metric."""
  names = [m for e in entries for m in e if m != ZERO_SHOT]
  if not names:
    raise ValueError("no metrics to choose a main metric from")
  return next((m for m in MAIN_METRIC_PREFERENCE if m in names), names[0])


def by_task(results: Results) -> Dict[str, List[Tuple[str, Mapping[str, Any]]]]:
  """task -> [(lang, entry)], tasks in first-seen order, seen languages before zero-shot."""
  tasks: Dict[str, List[Tuple[str, Mapping[str, Any]]]] = {}
  for key, entry in results.items():
    task, lang = split_key(key)
    tasks.setdefault(task, []).append((lang, entry))
  for rows in tasks.values():
    rows.sort(key=lambda row: (bool(row[1].get(ZERO_SHOT, False)), row[0]))
  return tasks


def _average(entries: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Dict[str, float]:
  out = {}
  for name in names:
    values = [float(e[name]) for e in entries if name in e]
    if values:
      out[name] = float(np.mean(values))
  return out


def table_rows(results: Results) -> Tuple[List[str], List[Dict[str, Any]]]:
  """(metric names, rows); a row is {task, language, zero_shot, is_average, <metric>: float}."""
  check_results(results)
  names = metric_names(results)
  rows: List[Dict[str, Any]] = []
  for task, langs in by_task(results).items():
    for zero_shot in (False, True):
      group = [(lang, e) for lang, e in langs if bool(e.get(ZERO_SHOT, False)) == zero_shot]
      for lang, entry in group:
        rows.append({"task": task, "language": lang, "zero_shot": zero_shot, "is_average": False,
                     **_metrics_of(f"{task}:{lang}", entry)})
      if group:
        rows.append({"task": task, "language": "avg", "zero_shot": zero_shot, "is_average": True,
                     **_average([e for _, e in group], names)})
  return names, rows


def _format_value(name: str, value: Optional[float]) -> str:
  if value is None:
    return "-"
  if name in RATIO_METRICS and math.isfinite(value):
    return f"{100 * value:.2f}"
  return f"{value:.4f}"


def _header(names: Sequence[str]) -> List[str]:
  return ["task:lang", "setting"] + [f"{n} (%)" if n in RATIO_METRICS else n for n in names]


def _cells(row: Mapping[str, Any], names: Sequence[str]) -> List[str]:
  setting = "zero-shot" if row["zero_shot"] else "seen"
  label = f"{row['task']}:{row['language']}"
  if row["is_average"]:
    label, setting = f"{row['task']}: average", f"{setting} (avg)"
  return [label, setting] + [_format_value(n, row.get(n)) for n in names]


def to_markdown(results: Results) -> str:
  names, rows = table_rows(results)
  lines = [_header(names), ["---", "---"] + ["---:"] * len(names)]
  for row in rows:
    cells = _cells(row, names)
    if row["is_average"]:
      cells = [f"**{c}**" for c in cells]
    lines.append(cells)
  return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def format_table(results: Results) -> str:
  """The results table as aligned plain text for the console."""
  names, rows = table_rows(results)
  lines = [_header(names)] + [_cells(row, names) for row in rows]
  widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
  fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(cells, widths)))
  rule = "  ".join("-" * w for w in widths)
  return "\n".join([fmt(lines[0]), rule] + [fmt(line) for line in lines[1:]])


def to_csv(results: Results) -> str:
  """One row per task:lang plus average rows (language 'avg'); raw values, not percentages."""
  names, rows = table_rows(results)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["task", "language", "zero_shot", "is_average"] + names)
  for row in rows:
    writer.writerow([row["task"], row["language"], row["zero_shot"], row["is_average"]]
                    + [repr(row[n]) if n in row else "" for n in names])
  return buf.getvalue()


def plot(results: Results, method: str = "Hyper-X") -> bytes:
  """PNG bytes: one panel per task, a bar per language of the task's main metric."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top

  check_results(results)
  tasks = by_task(results)
  fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 3.2 * len(tasks)), 3.6), squeeze=False)
  for ax, (task, langs) in zip(axes[0], tasks.items()):
    metric = main_metric([e for _, e in langs])
    values = [float(e.get(metric, np.nan)) * (100 if metric in RATIO_METRICS else 1) for _, e in langs]
    zero = [bool(e.get(ZERO_SHOT, False)) for _, e in langs]
    ax.bar([lang for lang, _ in langs], values, color=["#dd8452" if z else "#4c72b0" for z in zero],
           edgecolor="black", linewidth=0.5)
    for patch, z in zip(ax.patches, zero):
      patch.set_hatch("//" if z else None)
    ax.set_title(task)
    ax.set_ylabel(f"{metric} (%)" if metric in RATIO_METRICS else metric)
    ax.tick_params(axis="x", labelrotation=45)
  fig.legend(handles=[Patch(facecolor="#4c72b0", edgecolor="black", label="seen"),
                      Patch(facecolor="#dd8452", edgecolor="black", hatch="//", label="zero-shot")],
             loc="upper right")
  fig.suptitle(f"{method}: per-language results")
  fig.tight_layout(rect=(0, 0, 0.9, 1))
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  return buf.getvalue()


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  raise TypeError(f"results value {value!r} of type {type(value).__name__} is not JSON serialisable")


def write_results(workdir: str | os.PathLike, results: Results, *, method: str = "Hyper-X"
                  ) -> Dict[str, epath.Path]:
  """Writes results.{json,md,csv,png} into workdir; returns their paths by suffix."""
  check_results(results)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  markdown, table_csv, png = to_markdown(results), to_csv(results), plot(results, method)
  paths = {ext: workdir / f"results.{ext}" for ext in ("json", "md", "csv", "png")}
  fileio.atomic_write(paths["json"],
                      lambda f: json.dump(results, f, indent=2, default=_json_default))
  fileio.atomic_write(paths["md"], lambda f: f.write(f"# {method} results\n\n" + markdown))
  fileio.atomic_write(paths["csv"], lambda f: f.write(table_csv))
  fileio.atomic_write(paths["png"], lambda f: f.write(png), binary=True)
  return paths
