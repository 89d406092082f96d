"""Report how a run's tasks learned: loss onset and final loss per task, gradient diagnostics.

How a shared hypernetwork learns several tasks: measurements a run can log and a report.

With `config.diagnostics = True` every train step also returns, per parameter group (the
generators, the projector, the task / language / layer embeddings, the typology projection,
static adapters, heads, the backbone LayerNorms):

  diag/grad_norm/<group>      ‖g‖ of this step's gradient on the group
  diag/grad_sq/<group>        Σ g², what this step adds to Adam's second moment (× (1 − b2))
  diag/adapter/<stat>         scale of this batch's adapters (mean over layers): ‖D‖_F, ‖U‖_F
                              and mean |γ| of the adapter LayerNorm; for Hyper-X also
                              ‖p‖, the projector's output the generators read (before any
                              unit projection), mean over layers: `projection_norm`

The trainer logs them per task (`diag/grad_norm/generators/pairs`, ...) and, per logging
interval, each task's share of the second-moment inflow (`diag/nu_share/<group>/<task>`): the
fraction of Σ g² on that group that came from that task's steps. A task whose share is far above
its share of steps sets Adam's denominator for every task that shares the group.

    hyperx diagnostics WORKDIR

reads the run's metrics.jsonl and prints, per task, the first logged step where the training
loss left chance (below 95 % of ln(#labels)), the training loss at the end, and the logged
diagnostics over training.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from etils import epath

from hyperx_jax import cli
from hyperx_jax.tree import flat_paths

# (group, regex on the parameter path); first match wins, unmatched parameters are not grouped.
GROUPS = (
    ("generators", r"^adapters/generators/"),
    ("projector", r"^adapters/projector/"),
    ("task_embeddings", r"^adapters/task_embeddings"),
    ("lang_embeddings", r"^adapters/lang_embeddings"),
    ("layer_embeddings", r"^adapters/layer_embeddings"),
    ("typology_projection", r"^adapters/typology_projection"),
    ("static_adapters", r"^adapters/"),
    ("heads", r"^heads/"),
    ("encoder", r"^encoder/"),
)
PREFIX = "diag/"
CHANCE_FRACTION = 0.95  # "left chance": the loss fell below 95 % of ln(#labels)
FINAL_POINTS = 8  # the end of training: the mean over a task's last logged losses


def group_of(path: str) -> Optional[str]:
  return next((name for name, pattern in GROUPS if re.search(pattern, path)), None)


def gradient_stats(grads: Any) -> dict[str, jax.Array]:
  """diag/grad_norm/<group> and diag/grad_sq/<group> of a gradient state."""
  sums: dict[str, jax.Array] = {}
  for path, g in flat_paths(grads).items():
    name = group_of(path)
    if name is not None:
      sums[name] = sums.get(name, 0.0) + jnp.sum(jnp.square(g.astype(jnp.float32)))
  out = {}
  for name, sq in sums.items():
    out[f"{PREFIX}grad_sq/{name}"] = sq
    out[f"{PREFIX}grad_norm/{name}"] = jnp.sqrt(sq)
  return out


def adapter_stats(stack: Sequence[Any]) -> dict[str, jax.Array]:
  """Scale of the batch's adapters (the first of the stack; leaves [L, G, ...])."""
  if not stack:
    return {}
  w = stack[0]
  frob = lambda x: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(-2, -1))).mean()
  out = {f"{PREFIX}adapter/down_norm": frob(w.down), f"{PREFIX}adapter/up_norm": frob(w.up)}
  if w.ln_scale is not None:
    out[f"{PREFIX}adapter/ln_scale_abs"] = jnp.abs(w.ln_scale.astype(jnp.float32)).mean()
  return out


def projection_stats(p: jax.Array) -> dict[str, jax.Array]:
  """Mean ‖p‖ over the layers and groups of p [L, G, P] (HyperNetwork.projections)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(p.astype(jnp.float32)), axis=-1))  # [L, G]
  return {f"{PREFIX}adapter/projection_norm": norms.mean()}


def interval_summary(
    tasks: Sequence[str], metrics: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
  """Per-task means of the diag/ metrics over an interval, and each task's share of the
  interval's second-moment inflow per group (diag/nu_share/<group>/<task>)."""
  out: dict[str, float] = {}
  keys = sorted({k for m in metrics for k in m if k.startswith(PREFIX)})
  for task in sorted(set(tasks)):
    mine = [m for t, m in zip(tasks, metrics) if t == task]
    for key in keys:
      if not key.startswith(f"{PREFIX}grad_sq/"):
        out[f"{key}/{task}"] = float(np.mean([m[key] for m in mine]))
  for key in keys:
    if key.startswith(f"{PREFIX}grad_sq/"):
      total = float(np.sum([m[key] for m in metrics]))
      group = key[len(f"{PREFIX}grad_sq/") :]
      for task in sorted(set(tasks)):
        part = float(np.sum([m[key] for t, m in zip(tasks, metrics) if t == task]))
        out[f"{PREFIX}nu_share/{group}/{task}"] = part / total if total > 0 else math.nan
  return out


# ------------------------------------------------------------------------------- report


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training run directory?")
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chance_losses(config: Mapping[str, Any]) -> dict[str, float]:
  """ln(#labels) per classification task of a saved config.json (MLM has no chance level)."""
  return {
      name: math.log(len(t["labels"])) for name, t in config["tasks"].items() if t.get("labels")
  }


def loss_onsets(
    records: Sequence[Mapping[str, Any]], chance: Mapping[str, float]
) -> dict[str, Optional[int]]:
  """Per task, the first logged step whose mean training loss is below 95 % of chance."""
  onsets: dict[str, Optional[int]] = {task: None for task in chance}
  for record in records:
    for task, level in chance.items():
      loss = record["scalars"].get(f"loss/{task}")
      if onsets[task] is None and loss is not None and loss < CHANCE_FRACTION * level:
        onsets[task] = int(record["step"])
  return onsets


def final_losses(
    records: Sequence[Mapping[str, Any]], points: int = FINAL_POINTS
) -> dict[str, float]:
  """Per task, the mean training loss over its last `points` logged values.

  Two methods with the same final training loss and different test scores differ in how they
  generalise; a higher final loss says the method fits the task more slowly.
  """
  losses: dict[str, list[float]] = {}
  for record in records:
    for key, value in record["scalars"].items():
      if key.startswith("loss/"):
        losses.setdefault(key[len("loss/") :], []).append(value)
  return {task: float(np.mean(values[-points:])) for task, values in sorted(losses.items())}


def report(workdir: str) -> str:
  records = read_metrics(workdir)
  config = json.loads((epath.Path(workdir) / "config.json").read_text())
  lines = [
      f'{workdir}: method {config["method"]}, {len(records)} logged steps',
      "",
      "loss leaves chance (first logged step below 95 % of ln #labels):",
  ]
  for task, step in loss_onsets(records, chance_losses(config)).items():
    lines.append(f'  {task:12s} {"never" if step is None else step}')
  lines += ["", f"training loss at the end (mean of the last {FINAL_POINTS} logged values):"]
  for task, loss in final_losses(records).items():
    lines.append(f"  {task:12s} {loss:.4f}")
  diag = [r for r in records if any(k.startswith(PREFIX) for k in r["scalars"])]
  if not diag:
    lines.append("\n(no diag/ scalars: train with config.diagnostics=True to log them)")
    return "\n".join(lines)
  keys = sorted({k for r in diag for k in r["scalars"] if k.startswith(PREFIX)})
  picks = [diag[0], diag[len(diag) // 2], diag[-1]]
  lines += ["", f'{"diagnostic":52s}' + "".join(f'{"step " + str(r["step"]):>14s}' for r in picks)]
  for key in keys:
    values = [r["scalars"].get(key) for r in picks]
    lines.append(
        f"{key:52s}" + "".join(f"{v:14.4g}" if v is not None else f'{"-":>14s}' for v in values)
    )
  return "\n".join(lines)


def define_flags() -> None:
  """No flags: the run directory is the one argument."""


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("give one run directory: hyperx diagnostics RUN_DIR")
  print(report(argv[1]))


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
