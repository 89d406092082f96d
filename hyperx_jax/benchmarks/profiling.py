"""Where a compiled step spends its time: a jax.profiler trace and two short summaries of it.

- `trace` runs a step a few times under `jax.profiler.trace(DIR)`: open DIR in TensorBoard's
  profile plugin, or `DIR/plugins/profile/*/perfetto_trace.json.gz` in ui.perfetto.dev.
- `cost_summary`: XLA's static cost analysis of the compiled step (flops, bytes accessed,
  transcendentals). XLA counts a loop body once, so a scan over layers adds one layer's worth.
- `op_summary`: the HLO ops that took the most time in the trace (self time per step, nested
  events subtracted, a scan's ops summed over its iterations), each with the JAX operation it
  came from (the HLO `op_name` metadata; a fusion names its root's).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from typing import Any, Callable

import jax

PERFETTO_FILE = "perfetto_trace.json.gz"
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s*(ROOT )?%([\w.\-]+) = .*?\b([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_CALLS = re.compile(r"calls=%([\w.\-]+)")


def trace(step: Callable[[], Any], directory: str, steps: int) -> str:
  """Runs `step()` `steps` times under the profiler; returns the Perfetto trace file."""
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    for _ in range(steps):
      step()
  files = glob.glob(os.path.join(directory, "plugins", "profile", "*", PERFETTO_FILE))
  if not files:
    raise FileNotFoundError(f"jax.profiler wrote no {PERFETTO_FILE} under {directory}")
  return max(files, key=os.path.getmtime)


def cost_summary(compiled: Any) -> str:
  """One line from `compiled.cost_analysis()` (a `jax.stages.Compiled`)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if not cost:
    return "XLA cost analysis: not available on this backend"
  return (
      f"XLA cost analysis (static; a scanned loop body counted once): "
      f'{cost.get("flops", 0) / 1e9:.2f} GFLOP, '
      f'{cost.get("bytes accessed", 0) / 2**20:.1f} MiB accessed, '
      f'{cost.get("transcendentals", 0) / 1e6:.2f} M transcendentals'
  )


def hlo_op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX operation it came from (`op_name` metadata; for a fusion
  or a call without its own, the called computation's root's)."""
  own, calls, roots, computation = {}, {}, {}, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    instruction = _INSTRUCTION.match(line)
    if not instruction:
      continue
    is_root, name, opcode = instruction.groups()
    op_name = _OP_NAME.search(line)
    own[name] = op_name.group(1) if op_name else opcode
    called = _CALLS.search(line)
    if called and not op_name:
      calls[name] = called.group(1)
    if is_root and computation:
      roots[computation] = name
  for name, computation in calls.items():
    own[name] = own.get(roots.get(computation, ""), own[name])
  return own


def _self_times(events: list[dict]) -> dict[str, float]:
  """Event name -> summed self time in µs (children on the same thread subtracted)."""
  totals: dict[str, float] = collections.defaultdict(float)
  by_thread = collections.defaultdict(list)
  for e in events:
    by_thread[e["tid"]].append(e)
  for thread in by_thread.values():
    stack: list[list] = []  # [end, name, self time]
    for e in sorted(thread, key=lambda e: (e["ts"], -e["dur"])):
      while stack and stack[-1][0] <= e["ts"]:
        _, name, own = stack.pop()
        totals[name] += own
      if stack:
        stack[-1][2] -= e["dur"]
      stack.append([e["ts"] + e["dur"], e["args"]["hlo_op"], e["dur"]])
    for _, name, own in stack:
      totals[name] += own
  return totals


def op_summary(trace_file: str, compiled: Any, steps: int, top: int = 15) -> str:
  """The `top` HLO ops of `compiled` by self time per step in `trace_file` (`steps` steps)."""
  hlo = compiled.as_text()
  module = re.match(r"HloModule (\S+?),", hlo)
  with gzip.open(trace_file) as f:
    events = json.load(f)["traceEvents"]
  ops = [
      e
      for e in events
      if e.get("ph") == "X"
      and "hlo_op" in e.get("args", {})
      and (module is None or e["args"].get("hlo_module") == module.group(1))
  ]
  if not ops:
    return f"no HLO op events in {trace_file}"
  totals = _self_times(ops)
  whole = sum(totals.values())
  origin = hlo_op_names(hlo)
  lines = [
      f"HLO ops by self time ({steps} traced steps; {whole / steps / 1e3:.1f} ms/step in "
      f"{len(totals)} ops):",
      f'{"ms/step":>9}{"share":>8}  {"HLO op":<34}JAX op',
  ]
  for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
    lines.append(
        f"{us / steps / 1e3:>9.2f}{100 * us / whole:>7.1f}%  {name:<34}"
        f'{_short(origin.get(name, "?"))}'
    )
  return "\n".join(lines)


def _short(op_name: str, keep: int = 3) -> str:
  """The last `keep` parts of an op_name path (`jit(step)/…/while/body/dot_general`)."""
  return "/".join(op_name.split("/")[-keep:])
