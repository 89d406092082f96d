"""Final results: results.json, a Markdown and a CSV table, and a per-language bar chart.

Input is one dict for the whole run, keyed by "task:lang":

    {"ner:en": {"precision": 0.81, "recall": 0.84, "f1": 0.82, "zero_shot": False,
                "examples": 1000},
     "ner:tr": {"f1": 0.61, "zero_shot": True, "examples": 1000}, ...}

`examples` (how many examples the metrics were computed on) is optional. `results.json` holds
these entries and, under the key "provenance", what made them (`provenance.py`: step, method,
seed, config hash, code version); `from_file` reads both kinds of file, with and without it.

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

import numpy as np
from etils import epath

from hyperx_jax import fileio

Results = Mapping[str, Mapping[str, Any]]

RATIO_METRICS = ("accuracy", "precision", "recall", "f1")
_METRIC_ORDER = RATIO_METRICS + ("loss",)
# The number a task is known by: XTREME reports F1 for NER and POS, accuracy for XNLI.
MAIN_METRIC_PREFERENCE = ("f1", "accuracy")
ZERO_SHOT = "zero_shot"
EXAMPLES = "examples"
ENTRY_FIELDS = (ZERO_SHOT, EXAMPLES)  # what a pair's entry holds besides its metrics
PROVENANCE = "provenance"  # the results.json key of what made the results


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
    if name in ENTRY_FIELDS:
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
    count = entry.get(EXAMPLES, 0)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
      raise ValueError(f"results[{key!r}]['examples'] must be a count, got {count!r}")


def from_file(data: Any) -> Tuple[Dict[str, Mapping[str, Any]], Optional[Mapping[str, Any]]]:
  """A results.json object -> (its pair entries, its provenance; None in a file without)."""
  if not isinstance(data, Mapping):
    raise ValueError(f"expected a JSON object of 'task:lang' entries, got {type(data).__name__}")
  provenance = data.get(PROVENANCE)
  if provenance is not None and not isinstance(provenance, Mapping):
    raise ValueError(f"results['provenance'] must be an object, got {provenance!r}")
  results = {key: entry for key, entry in data.items() if key != PROVENANCE}
  check_results(results)
  return results, provenance


def metric_names(results: Results) -> List[str]:
  """All metric names, known ones first in a fixed order, others as first seen."""
  seen: List[str] = []
  for key, entry in results.items():
    seen += [m for m in _metrics_of(key, entry) if m not in seen]
  return [m for m in _METRIC_ORDER if m in seen] + [m for m in seen if m not in _METRIC_ORDER]


def main_metric(entries: Sequence[Mapping[str, Any]]) -> str:
  """The metric a task is plotted by: f1 if present, else accuracy, else its first metric."""
  names = [m for e in entries for m in e if m not in ENTRY_FIELDS]
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
        rows.append(
            {
                "task": task,
                "language": lang,
                "zero_shot": zero_shot,
                "is_average": False,
                **_metrics_of(f"{task}:{lang}", entry),
            }
        )
      if group:
        rows.append(
            {
                "task": task,
                "language": "avg",
                "zero_shot": zero_shot,
                "is_average": True,
                **_average([e for _, e in group], names),
            }
        )
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
  fmt = lambda cells: "  ".join(
      c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
  )
  rule = "  ".join("-" * w for w in widths)
  return "\n".join([fmt(lines[0]), rule] + [fmt(line) for line in lines[1:]])


def to_csv(results: Results) -> str:
  """One row per task:lang plus average rows (language 'avg'); raw values, not percentages."""
  names, rows = table_rows(results)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["task", "language", "zero_shot", "is_average"] + names)
  for row in rows:
    writer.writerow(
        [row["task"], row["language"], row["zero_shot"], row["is_average"]]
        + [repr(row[n]) if n in row else "" for n in names]
    )
  return buf.getvalue()


_SEEN_COLOR, _ZERO_SHOT_COLOR = "#4c72b0", "#dd8452"


def _panel_bars(
    langs: Sequence[Tuple[str, Mapping[str, Any]]], metric: str
) -> List[Tuple[str, float, bool, bool]]:
  """(label, value, zero_shot, is_average) per bar: the languages, then the seen and zero-shot
  averages of the metric over two or more languages (values in % for ratio metrics)."""
  scale = 100 if metric in RATIO_METRICS else 1
  bars = [
      (lang, scale * float(e.get(metric, np.nan)), bool(e.get(ZERO_SHOT, False)), False)
      for lang, e in langs
  ]
  for zero_shot, label in ((False, "avg seen"), (True, "avg 0-shot")):
    group = [e for _, e in langs if bool(e.get(ZERO_SHOT, False)) == zero_shot]
    average = _average(group, [metric]).get(metric)
    if average is not None and len(group) > 1:  # one language's average is its own bar
      bars.append((label, scale * average, zero_shot, True))
  return bars


def figure(
    results: Results, method: str = "Hyper-X", chance_accuracy: Optional[Mapping[str, float]] = None
):
  """The results chart (a matplotlib Figure): one panel per task, a bar per language of the
  task's main metric with its value written on it, then the seen and zero-shot averages (bold
  edges). Panels of the same metric share one y-axis (0-100 % for ratio metrics). A dashed
  line marks chance where `chance_accuracy` gives the task's (a fraction) and the panel shows
  accuracy."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top

  check_results(results)
  chance_accuracy = chance_accuracy or {}
  tasks = by_task(results)
  fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.5, 3.8 * len(tasks)), 4.0), squeeze=False)
  axis_of_metric: Dict[str, Any] = {}
  drew_chance = False
  for ax, (task, langs) in zip(axes[0], tasks.items()):
    metric = main_metric([e for _, e in langs])
    if metric in axis_of_metric:
      ax.sharey(axis_of_metric[metric])
    else:
      axis_of_metric[metric] = ax
      if metric in RATIO_METRICS:
        ax.set_ylim(0, 108)  # room for the value labels above 100 %
    bars = _panel_bars(langs, metric)
    drawn = ax.bar(
        [b[0] for b in bars],
        [b[1] for b in bars],
        color=[_ZERO_SHOT_COLOR if b[2] else _SEEN_COLOR for b in bars],
        hatch=["//" if b[2] else None for b in bars],
        edgecolor="black",
        linewidth=[1.8 if b[3] else 0.5 for b in bars],
    )
    ax.bar_label(drawn, fmt="%.1f" if metric in RATIO_METRICS else "%.3g", fontsize=7, padding=1)
    if metric == "accuracy" and task in chance_accuracy:
      ax.axhline(100 * chance_accuracy[task], color="dimgray", linestyle="--", linewidth=1)
      drew_chance = True
    ax.set_title(task)
    ax.set_ylabel(f"{metric} (%)" if metric in RATIO_METRICS else metric)
    ax.tick_params(axis="x", labelrotation=45)
  handles = [
      Patch(facecolor=_SEEN_COLOR, edgecolor="black", label="seen"),
      Patch(facecolor=_ZERO_SHOT_COLOR, edgecolor="black", hatch="//", label="zero-shot"),
  ]
  if drew_chance:
    handles.append(Line2D([], [], color="dimgray", linestyle="--", label="chance"))
  fig.legend(handles=handles, loc="upper right")
  fig.suptitle(f"{method}: per-language results")
  fig.tight_layout(rect=(0, 0, 0.88, 1))
  return fig


def plot(
    results: Results, method: str = "Hyper-X", chance_accuracy: Optional[Mapping[str, float]] = None
) -> bytes:
  """`figure` as PNG bytes."""
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig = figure(results, method, chance_accuracy)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  return buf.getvalue()


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  raise TypeError(
      f"results value {value!r} of type {type(value).__name__} is not JSON serialisable"
  )


def _provenance_line(provenance: Mapping[str, Any]) -> str:
  code = provenance.get("code", {})
  commit = code.get("git_commit")
  version = code.get("version", "?") + (
      f" ({commit[:12]}{', with uncommitted changes' if code.get('git_dirty') else ''})"
      if commit
      else ""
  )
  return (
      f"step {provenance.get('step')}, method {provenance.get('method')}, seed "
      f"{provenance.get('seed')}, config sha256 {str(provenance.get('config_sha256'))[:12]}, "
      f"hyperx_jax {version}\n\n"
  )


def write_results(
    workdir: str | os.PathLike,
    results: Results,
    *,
    method: str = "Hyper-X",
    provenance: Optional[Mapping[str, Any]] = None,
    chance_accuracy: Optional[Mapping[str, float]] = None,
) -> Dict[str, epath.Path]:
  """Writes results.{json,md,csv,png} into workdir; returns their paths by suffix. The JSON
  holds the entries and, when given, the provenance (under PROVENANCE)."""
  check_results(results)
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  markdown, table_csv = to_markdown(results), to_csv(results)
  png = plot(results, method, chance_accuracy)
  saved = dict(results) if provenance is None else {**results, PROVENANCE: dict(provenance)}
  about = _provenance_line(provenance) if provenance is not None else ""
  paths = {ext: workdir / f"results.{ext}" for ext in ("json", "md", "csv", "png")}
  fileio.atomic_write(paths["json"], lambda f: json.dump(saved, f, indent=2, default=_json_default))
  fileio.atomic_write(paths["md"], lambda f: f.write(f"# {method} results\n\n{about}" + markdown))
  fileio.atomic_write(paths["csv"], lambda f: f.write(table_csv))
  fileio.atomic_write(paths["png"], lambda f: f.write(png), binary=True)
  return paths
