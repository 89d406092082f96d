"""The trainer's jitted step: speed per method, compile time, and memory of full-size models.

    python -m hyperx_jax.benchmarks.train_bench [--steps 10] [--batch 16] [--length 64]
        [--memory base,large] [--memory_batch 32] [--memory_length 128] [--skip_speed]

1. Speed: Hyper-X vs static task adapters vs full fine-tuning on one small XLM-R-shaped
   encoder (random weights, 4 layers, h 256): compile time of `train.make_train_step` (the
   same function the trainer runs: AdamW, clipping, donation), then steps/s and examples/s
   (median over rounds that run one step of each method), with ratios to Hyper-X.
2. Memory: XLM-R base / large train steps (default batch 32 x length 128; the authors trained
   at length 256: `--memory_length 256`; b = 256, P = 192) compiled ahead of time from abstract inputs (`lower(...).compile()`;
   nothing is materialised), and `memory_analysis()` bytes: arguments (trainable + optimizer
   + frozen + batch), outputs, temporaries.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyperx_jax import optim, run, sharding, train
from hyperx_jax.benchmarks.common import (
    SMALL_ENCODER,
    TASK,
    SpeedRun,
    bench_config,
    encoder_dir,
    interleaved,
    one_device_mesh,
    random_batch,
)
from hyperx_jax.config import decode

SPEED_METHODS = ("hyperx", "task_adapters", "full_finetune")  # timed side by side


def speed(checkpoint: str, steps: int, batch: int, length: int) -> list[dict[str, Any]]:
  """Every method's step, timed interleaved (one step of each per round; median)."""
  local = random_batch(batch, length, SMALL_ENCODER["vocab_size"], "token_classification")
  runs = [
      SpeedRun(decode(bench_config(m, checkpoint, batch, length)), local) for m in SPEED_METHODS
  ]
  interleaved(runs, steps)
  return [r.result() for r in runs]


def memory(size: str, method: str = "hyperx", batch: int = 32, length: int = 256) -> dict[str, Any]:
  """memory_analysis() of an XLM-R `size` train step compiled from abstract inputs."""
  spec = decode(bench_config(method, None, batch, length, kind="pair_classification", preset=size))
  mesh = one_device_mesh()
  abstract = run.abstract_model(spec)
  predicate, _ = run.trainable_predicate(spec, abstract)
  graphdef, trainable, frozen = nnx.split(abstract, predicate, ...)
  rules = spec.logical_axis_rules
  trainable_sh = sharding.state_shardings(trainable, mesh, rules)
  frozen_sh = sharding.state_shardings(frozen, mesh, rules)
  tx = optim.make_optimizer(spec.optim, spec.total_steps, trainable)
  opt_abs = jax.eval_shape(tx.init, trainable)
  opt_sh = jax.tree.map(lambda _: sharding.replicated(mesh), opt_abs)
  step_fn = train.make_train_step(graphdef, tx, (trainable_sh, opt_sh, frozen_sh), mesh)
  batch_abs = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
      random_batch(batch, length, 8, "pair_classification"),
  )
  rng_abs = jax.eval_shape(lambda: jax.random.key(0))
  t0 = time.perf_counter()
  lowered = step_fn.lower(
      trainable, opt_abs, frozen, batch_abs, jax.ShapeDtypeStruct((), jnp.int32), rng_abs, TASK
  )
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  return {
      "size": size,
      "method": method,
      "batch": batch,
      "length": length,
      "params_total": count(trainable) + count(frozen),
      "params_trainable": count(trainable),
      "compile_s": compile_s,
      "argument_bytes": int(mem.argument_size_in_bytes),
      "output_bytes": int(mem.output_size_in_bytes),
      "temp_bytes": int(mem.temp_size_in_bytes),
      "alias_bytes": int(mem.alias_size_in_bytes),
      "generated_code_bytes": int(mem.generated_code_size_in_bytes),
  }


def _gib(n: int) -> str:
  return f"{n / 2**30:.2f} GiB"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--memory", default="base,large", help='XLM-R sizes ("" to skip)')
  parser.add_argument("--memory_batch", type=int, default=32)
  parser.add_argument("--memory_length", type=int, default=128)
  parser.add_argument("--skip_speed", action="store_true")
  parser.add_argument("--json", default=None, help="also write the numbers here")
  args = parser.parse_args(argv)
  jax.config.update("jax_threefry_partitionable", True)
  out: dict[str, Any] = {"device": str(jax.devices()[0].device_kind), "speed": [], "memory": []}
  if not args.skip_speed:
    with encoder_dir(SMALL_ENCODER) as ckpt:
      out["speed"] = speed(ckpt, args.steps, args.batch, args.length)
    base = out["speed"][0]
    print(
        f'\ntrain step, encoder h={SMALL_ENCODER["hidden_size"]} '
        f'L={SMALL_ENCODER["num_hidden_layers"]}, batch {args.batch} x length {args.length} '
        f'on {out["device"]}:'
    )
    print(
        f'{"method":<15}{"trainable":>12}{"compile s":>11}{"step ms":>10}{"ex/s":>9}'
        f'{"time vs hyperx":>16}'
    )
    for r in out["speed"]:
      print(
          f'{r["method"]:<15}{r["trainable_params"]:>12,}{r["compile_s"]:>11.2f}'
          f'{1e3 * r["step_s"]:>10.1f}{r["examples_per_s"]:>9.1f}'
          f'{r["step_s"] / base["step_s"]:>15.2f}x'
      )
  for size in filter(None, args.memory.split(",")):
    out["memory"].append(memory(size, batch=args.memory_batch, length=args.memory_length))
  if out["memory"]:
    print(
        f"\nAOT-compiled train step (Hyper-X, batch {args.memory_batch} x length "
        f"{args.memory_length}), memory_analysis():"
    )
    for r in out["memory"]:
      print(
          f'XLM-R {r["size"]:<6} params {r["params_total"] / 1e6:7.1f}M '
          f'(trainable {r["params_trainable"] / 1e6:.2f}M)  arguments '
          f'{_gib(r["argument_bytes"])}  outputs {_gib(r["output_bytes"])}  temporaries '
          f'{_gib(r["temp_bytes"])}  compile {r["compile_s"]:.1f}s'
      )
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
