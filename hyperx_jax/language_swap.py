"""Does a zero-shot pair transfer through its own language vector? Score it with other ones.

Hyper-X generates a pair's adapters from (task, language, layer): a zero-shot pair (a task
never trained in that language) reads its own language vector. If the pair scores the same
with any trained language's vector in its place, the transfer does not go through the
language vector at all; if another language's vector scores higher, its own vector hurts.

`hyperx evaluate --language_swap` scores every zero-shot pair of a run with its own vector and
with each trained language's (a language with any training stream), `pairs:tr@de` being
pairs:tr scored with German's vector, and writes `language_swap.{json,md}`;
`hyperx experiment ... --language_swap` does it for every run and averages over seeds. For the
static task adapters the language is not an input, so every vector scores the same; MAD-X
swaps the language adapter.

Reading of one pair (scores in %, DELTA = 1 point):
  own - mean(others) > DELTA and own >= max(others)   its own vector carries the transfer
  max(others) > own + DELTA                           another language's vector scores higher
  otherwise                                           the score does not depend on the vector
"""

from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

import numpy as np

DELTA = 1.0  # points: smaller differences between vectors are read as none
SWAP = "@"  # 'pairs:tr@de': pairs:tr scored with de's language vector
JSON_NAME, MD_NAME = "language_swap.json", "language_swap.md"

Table = dict[str, dict[str, float]]  # 'task:lang' -> {vector language: main metric in %}


def swapped_key(key: str, vector: str) -> str:
  """'pairs:tr' scored with 'de' -> 'pairs:tr@de' ('pairs:tr' with its own)."""
  return key if key.rpartition(":")[2] == vector else f"{key}{SWAP}{vector}"


def split_swapped(text: str) -> tuple[str, str, str]:
  """'pairs:tr@de' -> ('pairs', 'tr', 'de'); 'pairs:tr' -> ('pairs', 'tr', 'tr')."""
  pair, _, vector = text.partition(SWAP)
  task, _, lang = pair.partition(":")
  return task, lang, vector or lang


def reading(scores: Mapping[str, float], own: str) -> str:
  """What one pair's scores say about its own language vector (module docstring)."""
  others = {v: s for v, s in scores.items() if v != own}
  if own not in scores or not others:
    return "no other vector scored"
  best_vector = max(others, key=others.get)
  if others[best_vector] > scores[own] + DELTA:
    return f"another language's vector scores higher ({best_vector})"
  if scores[own] - float(np.mean(list(others.values()))) > DELTA:
    return "its own vector carries the transfer"
  return f"does not depend on the language vector (within {DELTA:g} point)"


def own_minus_others(scores: Mapping[str, float], own: str) -> float:
  others = [s for v, s in scores.items() if v != own]
  return scores[own] - float(np.mean(others)) if others and own in scores else math.nan


def markdown(table: Table) -> str:
  """One run's table: a row per zero-shot pair, a column per vector (own first)."""
  vectors = []
  for scores in table.values():
    vectors += [v for v in scores if v not in vectors]
  lines = [
      "| pair | "
      + " | ".join(f"{v} vector" for v in ["own"] + vectors)
      + " | own - others | reading |",
      "|---|" + "---:|" * (len(vectors) + 2) + "---|",
  ]
  for key, scores in table.items():
    own = key.rpartition(":")[2]
    cells = [f"{scores[own]:.1f}"] + [
        "" if v == own or v not in scores else f"{scores[v]:.1f}" for v in vectors
    ]
    lines.append(
        f"| {key} | " + " | ".join(cells) + f" | {own_minus_others(scores, own):+.1f} | "
        f"{reading(scores, own)} |"
    )
  return "\n".join(lines) + "\n"


def write(out_dir, table: Table) -> None:
  """language_swap.{json,md} in `out_dir` (an epath.Path or str), each written whole."""
  from hyperx_jax import fileio  # pylint: disable=g-import-not-at-top (keeps this module light)

  fileio.atomic_write_text(f"{out_dir}/{JSON_NAME}", json.dumps(table, indent=2) + "\n")
  fileio.atomic_write_text(f"{out_dir}/{MD_NAME}", markdown(table))


def aggregate(runs: Sequence[tuple[str, Table]]) -> str:
  """Markdown over runs [(column, table)]: per pair and vector, mean ± std over the column's
  runs; then per pair and column own - others (paired per run) and how many runs read 'its own
  vector carries the transfer'."""
  columns = list(dict.fromkeys(c for c, _ in runs))
  pairs = list(dict.fromkeys(k for _, t in runs for k in t))
  lines = ["| pair | vector | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]

  def cell(values: list[float]) -> str:
    if not values:
      return ""
    std = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
    return f"{np.mean(values):.1f}{std}"

  for key in pairs:
    own = key.rpartition(":")[2]
    vectors = list(dict.fromkeys(v for _, t in runs for v in t.get(key, {})))
    for v in [own] + [v for v in vectors if v != own]:
      row = [
          cell([t[key][v] for c, t in runs if c == col and v in t.get(key, {})]) for col in columns
      ]
      lines.append(f"| {key} | {v}{' (own)' if v == own else ''} | " + " | ".join(row) + " |")
  lines += [
      "",
      "| pair | " + " | ".join(f"{c}: own - others" for c in columns) + " |",
      "|---|" + "---:|" * len(columns),
  ]
  for key in pairs:
    own = key.rpartition(":")[2]
    row = []
    for col in columns:
      tables = [t[key] for c, t in runs if c == col and key in t]
      carried = sum(reading(s, own) == "its own vector carries the transfer" for s in tables)
      text = cell([own_minus_others(s, own) for s in tables])
      row.append(f"{text} (own vector carries it in {carried} of {len(tables)})" if tables else "")
    lines.append(f"| {key} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"
