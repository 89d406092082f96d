"""Compare runs in one table: mean ± std over seeds per method and task:lang, zero-shot marked.

    hyperx compare [LABEL=]RUN_DIR [[LABEL=]RUN_DIR ...] [--out=DIR] [--differences=A:B,...]

Each RUN_DIR is a finished training run (`config.json` + `results.json`); its method and seed
come from its config. Runs form one column per method (a Hyper-X run with a typology language
source is its own column, `hyperx-typology` / `hyperx-both`), or per LABEL where given
(`paper=runs/p/hyperx/seed1`). The runs of one column must have the same config apart from the
seed and bookkeeping (`config.changes.COLUMN_IGNORES`; for the methods other than Hyper-X
also the fields only the hypernetwork reads); otherwise it is an error naming the fields, so
that runs of different recipes are never averaged together. Every (task, language)
pair is scored by its task's main metric (F1 where the task reports it, else accuracy, as
XTREME does); the "zero-shot average" row averages each run's zero-shot pairs first and then
takes mean ± std over that method's runs. Under the table come the paired differences, seed by
seed: the first column minus each other one, or A − B for each `--differences=A:B,...` pair of
columns. Writes `compare.md`, `compare.csv` and `compare.png` to --out (default: the current
directory) and prints the Markdown.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import sys
from typing import Mapping, Optional, Sequence

import numpy as np
from absl import app, flags
from etils import epath

from hyperx_jax import cli, fileio, report
from hyperx_jax.config import changes
from hyperx_jax.config.vocabulary import LEARNED_SOURCE, METHOD_NAMES
from hyperx_jax.errors import UserError

ZERO_SHOT_AVERAGE = "zero-shot average"
SEEN_AVERAGE = "seen average"


def variant_name(method: str, language_source: str = LEARNED_SOURCE) -> str:
  """'hyperx' + 'typology' -> 'hyperx-typology'; the learned source keeps the method's name."""
  return method if language_source == LEARNED_SOURCE else f"{method}-{language_source}"


@dataclasses.dataclass(frozen=True)
class RunResult:
  directory: str
  method: str  # variant_name(method, language source)
  seed: int
  results: Mapping[str, Mapping]  # results.json: {'task:lang': {metric: value, 'zero_shot'}}
  provenance: Optional[Mapping] = None  # results.json's, where it has one (report.from_file)
  label: Optional[str] = None  # the column's name, given as LABEL=RUN_DIR
  config: Optional[Mapping] = None  # config.json

  @property
  def column(self) -> str:
    return self.label or self.method


def split_label(arg: str) -> tuple[Optional[str], str]:
  """'paper=runs/x' -> ('paper', 'runs/x'); an existing directory (or no '=') is unlabelled."""
  label, sep, directory = arg.partition("=")
  if not sep or not label or epath.Path(arg).exists():
    return None, arg
  return label, directory


def load_run(directory: str, label: Optional[str] = None) -> RunResult:
  """A finished run's method, seed and results (clear errors for an unfinished one)."""
  path = epath.Path(directory)
  missing = [n for n in ("config.json", "results.json") if not (path / n).exists()]
  if missing:
    raise FileNotFoundError(f'{directory}: no {" or ".join(missing)}; is it a finished run?')
  loaded = {}
  for name in ("config.json", "results.json"):
    try:
      loaded[name] = json.loads((path / name).read_text())
    except json.JSONDecodeError as e:
      raise UserError(f"{path / name}:{e.lineno}: not valid JSON ({e.msg})") from None
  config = loaded["config.json"]
  missing = [k for k in ("method", "seed") if k not in config]
  if missing:
    raise UserError(f'{path / "config.json"}: no {missing}; is it a hyperx_jax run config?')
  try:
    results, provenance = report.from_file(loaded["results.json"])
  except ValueError as e:
    raise UserError(f'{path / "results.json"}: {e}') from None
  source = (config.get("hyperx") or {}).get("language_source", LEARNED_SOURCE)
  method = variant_name(
      config["method"], source if config["method"] == "hyperx" else LEARNED_SOURCE
  )
  return RunResult(str(directory), method, int(config["seed"]), results, provenance, label, config)


def check_columns(runs: Sequence[RunResult]) -> None:
  """A ValueError where two runs of one column differ in config beyond COLUMN_IGNORES (and,
  for a method other than Hyper-X, the hypernetwork's own fields); a field one config lacks
  counts only where the other moves it off its default."""
  first: dict[str, RunResult] = {}
  for r in runs:
    ref = first.setdefault(r.column, r)
    if r is ref or r.config is None or ref.config is None:
      continue
    allowed = changes.for_method(changes.COLUMN_IGNORES, ref.config, r.config)
    fields = changes.changes_beyond(ref.config, r.config, allowed)
    if fields:
      listed = "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in list(fields.items())[:6])
      raise UserError(
          f"{ref.directory} and {r.directory} would share the column {_name(r.column)!r}, but "
          f"their configs differ beyond the seed ({listed}); name each group with "
          "LABEL=RUN_DIR."
      )


def main_scores(results: Mapping[str, Mapping]) -> dict[str, tuple[float, bool]]:
  """{'task:lang': (main metric as a percentage, zero_shot)} plus the seen / zero-shot
  averages of this run under SEEN_AVERAGE / ZERO_SHOT_AVERAGE."""
  scores = {}
  for task, langs in report.by_task(results).items():
    metric = report.main_metric([e for _, e in langs])
    for lang, entry in langs:
      if metric in entry:
        scores[f"{task}:{lang}"] = (100 * float(entry[metric]), bool(entry.get("zero_shot")))
  for name, zero_shot in ((SEEN_AVERAGE, False), (ZERO_SHOT_AVERAGE, True)):
    values = [v for v, z in scores.values() if z == zero_shot]
    if values:
      scores[name] = (float(np.mean(values)), zero_shot)
  return scores


@dataclasses.dataclass(frozen=True)
class Cell:
  mean: float
  std: float  # sample standard deviation over seeds (0 for one seed)
  values: tuple[float, ...]
  seeds: tuple[int, ...]

  def text(self) -> str:
    if len(self.values) == 1:
      return f"{self.mean:.1f}"
    return f"{self.mean:.1f} ± {self.std:.1f}"


@dataclasses.dataclass(frozen=True)
class Difference:
  """a − b over the seeds both columns ran: mean ± sample std of the per-seed differences."""

  mean: float
  std: float
  ahead: int  # seeds where a > b
  seeds: tuple[int, ...]

  def text(self) -> str:
    spread = f" ± {self.std:.1f}" if len(self.seeds) > 1 else ""
    return f"{self.mean:+.1f}{spread} ({self.ahead}/{len(self.seeds)})"


def paired_difference(a: Cell, b: Cell) -> Optional[Difference]:
  """a − b seed by seed (seed s of one method against seed s of the other: the same data
  order and initial draws); None where they share no seed."""
  shared = sorted(set(a.seeds) & set(b.seeds))
  if not shared:
    return None
  a_of, b_of = dict(zip(a.seeds, a.values)), dict(zip(b.seeds, b.values))
  diffs = np.asarray([a_of[s] - b_of[s] for s in shared])
  std = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
  return Difference(float(diffs.mean()), std, int((diffs > 0).sum()), tuple(shared))


def columns(runs: Sequence[RunResult]) -> list[str]:
  """The runs' columns, in the order they first appear."""
  return list(dict.fromkeys(r.column for r in runs))


def aggregate(
    runs: Sequence[RunResult],
) -> tuple[list[str], list[str], dict[tuple[str, str], Cell], dict[str, bool]]:
  """(methods, rows, {(method, row): Cell}, {row: zero_shot}) with rows in result order."""
  values: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
  zero_shot: dict[str, bool] = {}
  methods = columns(runs)
  for r in runs:
    for row, (value, z) in main_scores(r.results).items():
      values[r.column, row].append((r.seed, value))
      zero_shot.setdefault(row, z)
  rows = [k for k in zero_shot if k not in (SEEN_AVERAGE, ZERO_SHOT_AVERAGE)]
  rows = sorted(rows, key=lambda k: zero_shot[k]) + [
      k for k in (SEEN_AVERAGE, ZERO_SHOT_AVERAGE) if k in zero_shot
  ]
  cells = {}
  for key, seeded in values.items():
    seeded = sorted(seeded)
    vals = np.asarray([v for _, v in seeded])
    std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    cells[key] = Cell(float(vals.mean()), std, tuple(vals.tolist()), tuple(s for s, _ in seeded))
  return methods, rows, cells, zero_shot


def _name(variant: str) -> str:
  """'hyperx' -> 'Hyper-X', 'hyperx-typology' -> 'Hyper-X (typology)'; a label as it is."""
  method, _, source = variant.partition("-")
  if method not in METHOD_NAMES:
    return variant
  name = METHOD_NAMES.get(method, method)
  return f"{name} ({source})" if source else name


def to_markdown(
    runs: Sequence[RunResult], differences: Optional[Sequence[tuple[str, str]]] = None
) -> str:
  """The table, then the paired differences: `differences` (column a, column b) gives a − b
  each; default: the first column minus each other one."""
  methods, rows, cells, zero_shot = aggregate(runs)
  seeds = {m: sorted({r.seed for r in runs if r.column == m}) for m in methods}
  header = ["task:lang", "setting"] + [
      f'{_name(m)} (seeds {",".join(map(str, seeds[m]))})' for m in methods
  ]
  lines = [header, ["---", "---"] + ["---:"] * len(methods)]
  for row in rows:
    setting = "zero-shot" if zero_shot[row] else "seen"
    best = max((cells[m, row].mean for m in methods if (m, row) in cells), default=math.nan)
    texts = []
    for m in methods:
      cell = cells.get((m, row))
      text = "-" if cell is None else cell.text()
      texts.append(
          f"**{text}**" if cell is not None and cell.mean == best and len(methods) > 1 else text
      )
    lines.append([f"*{row}*" if row in (SEEN_AVERAGE, ZERO_SHOT_AVERAGE) else row, setting] + texts)
  note = (
      "Main metric per task (F1 where reported, else accuracy), in %, mean ± sample std "
      "over seeds; the best mean per row in bold.\n\n"
  )
  table = note + "".join("| " + " | ".join(cells_) + " |\n" for cells_ in lines)
  if differences is None:
    differences = [(methods[0], m) for m in methods[1:]]
  return table + _paired_markdown(differences, rows, cells)


def _paired_markdown(differences: Sequence[tuple[str, str]], rows: Sequence[str], cells) -> str:
  """Column a minus column b, seed by seed, for each (a, b); empty without any."""
  if not differences:
    return ""
  lines = [
      ["task:lang"] + [f"{_name(a)} − {_name(b)}" for a, b in differences],
      ["---"] + ["---:"] * len(differences),
  ]
  for row in rows:
    texts = []
    for a, b in differences:
      both = (a, row) in cells and (b, row) in cells
      diff = paired_difference(cells[a, row], cells[b, row]) if both else None
      texts.append("-" if diff is None else diff.text())
    lines.append([row] + texts)
  ahead = _name(differences[0][0]) if len(differences) == 1 else "the first of a pair"
  note = (
      f"\nPaired differences over the seeds both columns ran: mean ± sample std of the "
      f"per-seed differences, in points (seeds where {ahead} is ahead / seeds).\n\n"
  )
  return note + "".join("| " + " | ".join(cells_) + " |\n" for cells_ in lines)


def to_csv(runs: Sequence[RunResult]) -> str:
  methods, rows, cells, zero_shot = aggregate(runs)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["method", "row", "zero_shot", "mean", "std", "n", "seeds", "values"])
  for row in rows:
    for m in methods:
      if (m, row) in cells:
        c = cells[m, row]
        writer.writerow(
            [
                m,
                row,
                zero_shot[row],
                f"{c.mean:.4f}",
                f"{c.std:.4f}",
                len(c.values),
                " ".join(map(str, c.seeds)),
                " ".join(f"{v:.4f}" for v in c.values),
            ]
        )
  return buf.getvalue()


def plot(runs: Sequence[RunResult]) -> bytes:
  """PNG bytes: per row a group of bars (one per method), std as error bars, values on bars,
  zero-shot rows hatched."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  methods, rows, cells, zero_shot = aggregate(runs)
  width = 0.8 / max(1, len(methods))
  fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) * max(1, len(methods)) * 0.6), 4.2))
  x = np.arange(len(rows))
  for i, m in enumerate(methods):
    means = [cells[m, r].mean if (m, r) in cells else np.nan for r in rows]
    stds = [cells[m, r].std if (m, r) in cells else 0.0 for r in rows]
    bars = ax.bar(
        x + (i - (len(methods) - 1) / 2) * width,
        means,
        width,
        yerr=stds,
        capsize=2,
        label=_name(m),
        edgecolor="black",
        linewidth=0.5,
    )
    for bar, r, mean in zip(bars, rows, means):
      bar.set_hatch("//" if zero_shot[r] else None)
      if np.isfinite(mean):
        ax.annotate(
            f"{mean:.1f}",
            (bar.get_x() + bar.get_width() / 2, mean),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
  ax.set_xticks(
      x,
      [f"{r}\n(zero-shot)" if zero_shot[r] else r for r in rows],
      rotation=30,
      ha="right",
      fontsize=8,
  )
  ax.set_ylabel("main metric (%)")
  ax.set_ylim(0, 105)
  ax.legend(fontsize=8)
  ax.set_title("mean ± std over seeds; hatched: zero-shot")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  return buf.getvalue()


def parse_differences(
    spec: Sequence[str], runs: Sequence[RunResult]
) -> Optional[list[tuple[str, str]]]:
  """['A:B', ...] -> [('A', 'B'), ...], each a column of `runs`; [] -> None (the default)."""
  if not spec:
    return None
  known = columns(runs)
  pairs = []
  for item in spec:
    a, sep, b = item.partition(":")
    if not sep or a not in known or b not in known or a == b:
      raise UserError(
          f"--differences: {item!r} is not COLUMN:OTHER with two of the columns {known}"
      )
    pairs.append((a, b))
  return pairs


def write(runs: Sequence[RunResult], out_dir: str, differences: Sequence[str] = ()) -> str:
  """compare.{md,csv,png} in out_dir, once check_columns passes; returns the Markdown.
  `differences`: 'A:B' column pairs whose paired differences A − B follow the table."""
  check_columns(runs)
  pairs = parse_differences(differences, runs)
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  markdown = to_markdown(runs, pairs)
  fileio.atomic_write_text(out / "compare.md", markdown)
  fileio.atomic_write_text(out / "compare.csv", to_csv(runs))
  png = plot(runs)
  fileio.atomic_write(out / "compare.png", lambda f: f.write(png), binary=True)
  return markdown


def define_flags() -> None:
  flags.DEFINE_string("out", ".", "Where compare.{md,csv,png} go.")
  flags.DEFINE_list(
      "differences",
      [],
      "Paired differences to print, COLUMN:OTHER (COLUMN − OTHER), comma-separated "
      "(default: the first column minus each other one).",
  )


def main(argv: Sequence[str]) -> None:
  """argv[1:]: finished run directories, each [LABEL=]RUN_DIR."""
  if len(argv) < 2:
    raise app.UsageError("give the finished run directories to compare: [LABEL=]RUN_DIR ...")
  runs = [load_run(d, label) for label, d in map(split_label, argv[1:])]
  # checks the columns and the differences before writing anything
  print(write(runs, flags.FLAGS.out, flags.FLAGS.differences))


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
