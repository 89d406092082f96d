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
import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh

from hyperx_jax import optim, run, sharding, specs, train
from hyperx_jax.schema import MLM, TOKEN

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)
from configs import common  # noqa: E402  pylint: disable=g-import-not-at-top

SPEED_METHODS = ('hyperx', 'task_adapters', 'full_finetune')  # timed side by side
SMALL_ENCODER = {'model_type': 'xlm-roberta', 'vocab_size': 8000, 'hidden_size': 256,
                 'num_hidden_layers': 4, 'num_attention_heads': 4, 'intermediate_size': 1024,
                 'max_position_embeddings': 514, 'type_vocab_size': 1, 'layer_norm_eps': 1e-5,
                 'pad_token_id': 1}
NUM_LABELS = 17
TASK = 'task'  # the one task of `bench_config`


def one_device_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ('data', 'fsdp', 'tensor'),
              axis_types=(AxisType.Auto,) * 3)


def bench_config(method: str, checkpoint: str | None, batch: int, length: int, *,
                 kind: str = TOKEN, preset: str = 'base'):
  c = common.get_config()
  common.set_method(c, method)
  c.model.checkpoint, c.model.preset = checkpoint, preset
  c.tokenizer = 'unused'
  if kind == MLM:
    c.tasks[TASK] = dict(common.MLM_TASK)
  else:
    labels = [f'L{i}' for i in range(NUM_LABELS if kind == TOKEN else 3)]
    c.tasks[TASK] = {'kind': kind, 'labels': labels, 'metric': 'accuracy'}
  c.languages = ['en', 'tr']
  c.data.batch_size, c.data.max_length = batch, length
  c.total_steps, c.optim.warmup_steps = 1000, 10
  return c


def random_batch(batch: int, length: int, vocab: int, kind: str, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  labels_shape = (batch, length) if kind == TOKEN else (batch,)
  return {'input_ids': rng.integers(5, vocab, (batch, length), dtype=np.int32),
          'attention_mask': np.ones((batch, length), np.int32),
          'token_type_ids': np.zeros((batch, length), np.int32),
          'labels': rng.integers(0, 3, labels_shape, dtype=np.int32),
          'task_id': np.zeros(batch, np.int32), 'lang_id': np.ones(batch, np.int32),
          'example_mask': np.ones(batch, np.int32)}


@contextlib.contextmanager
def encoder_dir(encoder: Mapping[str, Any]) -> Iterator[str]:
  """A temporary checkpoint directory holding only `encoder` as its config.json (random
  weights: `run.create_model(..., load_pretrained=False)`)."""
  with tempfile.TemporaryDirectory() as ckpt:
    with open(os.path.join(ckpt, 'config.json'), 'w') as f:
      json.dump(dict(encoder), f)
    yield ckpt


def _step_fn(mesh: Mesh, parts, tx, opt_state):
  shardings = (run.shardings_of(parts.trainable), run.shardings_of(opt_state),
               run.shardings_of(parts.frozen))
  return train.make_train_step(parts.graphdef, tx, shardings, mesh)


class SpeedRun:
  """A spec's compiled trainer step on one device and one fixed batch; `step()` runs one
  update.

  `local_batch`: the numpy batch every step trains on (task `TASK`). `load_pretrained`: the
  encoder weights from the spec's checkpoint (else random; speed does not depend on them).
  Before the first step, `state` holds the initial (trainable, opt_state); steps donate it.
  """

  def __init__(self, spec: specs.RunSpec, local_batch: Mapping[str, np.ndarray], *,
               name: Optional[str] = None, load_pretrained: bool = False):
    self.spec = spec
    mesh = one_device_mesh()
    parts, _ = run.create_model(spec, mesh, load_pretrained=load_pretrained)
    self.method, self.batch = name or spec.method, int(local_batch['input_ids'].shape[0])
    self.graphdef = parts.graphdef
    self.trainable_params = int(sum(x.size for x in jax.tree.leaves(parts.trainable)))
    tx = optim.make_optimizer(spec.optim, parts.trainable)
    opt_state = train.init_optimizer(tx, parts.trainable, mesh)
    step_fn = _step_fn(mesh, parts, tx, opt_state)
    self.frozen = parts.frozen
    self.batch_arrays = train.global_batch(dict(local_batch), mesh)
    self.rng = jax.random.key(0)
    t0 = time.perf_counter()
    self.compiled = step_fn.lower(parts.trainable, opt_state, self.frozen, self.batch_arrays,
                                  np.int32(0), self.rng, TASK).compile()
    self.compile_s = time.perf_counter() - t0
    self.state = (parts.trainable, opt_state)
    self.i = 0
    self.times: list[float] = []
    self.losses: list[float] = []
    self.metrics: dict[str, Any] = {}

  def step(self, timed: bool = True) -> None:
    t0 = time.perf_counter()
    trainable, opt_state, m = self.compiled(*self.state, self.frozen, self.batch_arrays,
                                            np.int32(self.i), self.rng)
    jax.block_until_ready((trainable, m['loss']))
    if timed:
      self.times.append(time.perf_counter() - t0)
    self.state, self.i, self.metrics = (trainable, opt_state), self.i + 1, m
    self.losses.append(float(m['loss']) if bool(m['finite']) else float('nan'))

  def result(self) -> dict[str, Any]:
    """Median step time and rates; the first and last loss (the same batch every step, so it
    falls; NaN for a step whose loss or gradient was not finite)."""
    step_s = float(np.median(self.times))
    return {'method': self.method, 'trainable_params': self.trainable_params,
            'compile_s': self.compile_s, 'step_s': step_s, 'steps_per_s': 1 / step_s,
            'examples_per_s': self.batch / step_s, 'first_loss': self.losses[0],
            'last_loss': self.losses[-1]}


def interleaved(runs, steps: int, warmup: int = 1) -> None:
  """`warmup` untimed steps of each run, then `steps` rounds of one timed step of each, so that
  drift in the machine's load hits every run alike. A run: `.step(timed: bool)`."""
  for _ in range(warmup):
    for r in runs:
      r.step(timed=False)
  for _ in range(steps):
    for r in runs:
      r.step()


def time_interleaved(calls: Mapping[str, Callable[[int], Any]], repeats: int, warmup: int = 1,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
  """Seconds per call of each `call(round)` (which must block until its result is ready):
  `warmup` untimed rounds (compilation), then `repeats` timed rounds of one call of each, so
  that drift in the machine's load hits every call alike."""
  times: dict[str, list[float]] = {name: [] for name in calls}
  for i in range(warmup + repeats):
    for name, call in calls.items():
      t0 = clock()
      call(i)
      if i >= warmup:
        times[name].append(clock() - t0)
  return times


def speed(checkpoint: str, steps: int, batch: int, length: int) -> list[dict[str, Any]]:
  """Every method's step, timed interleaved (one step of each per round; median)."""
  local = random_batch(batch, length, SMALL_ENCODER['vocab_size'], 'token_classification')
  runs = [SpeedRun(specs.decode(bench_config(m, checkpoint, batch, length)), local)
          for m in SPEED_METHODS]
  interleaved(runs, steps)
  return [r.result() for r in runs]


def memory(size: str, method: str = 'hyperx', batch: int = 32, length: int = 256
           ) -> dict[str, Any]:
  """memory_analysis() of an XLM-R `size` train step compiled from abstract inputs."""
  spec = specs.decode(bench_config(method, None, batch, length, kind='pair_classification',
                                   preset=size))
  mesh = one_device_mesh()
  abstract = run.abstract_model(spec)
  predicate, _ = run.trainable_predicate(spec, abstract)
  graphdef, trainable, frozen = nnx.split(abstract, predicate, ...)
  rules = spec.mesh.logical_axis_rules
  trainable_sh = sharding.state_shardings(trainable, mesh, rules)
  frozen_sh = sharding.state_shardings(frozen, mesh, rules)
  tx = optim.make_optimizer(spec.optim, trainable)
  opt_abs = jax.eval_shape(tx.init, trainable)
  opt_sh = jax.tree.map(lambda _: sharding.replicated(mesh), opt_abs)
  step_fn = train.make_train_step(graphdef, tx, (trainable_sh, opt_sh, frozen_sh), mesh)
  batch_abs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                           random_batch(batch, length, 8, 'pair_classification'))
  rng_abs = jax.eval_shape(lambda: jax.random.key(0))
  t0 = time.perf_counter()
  lowered = step_fn.lower(trainable, opt_abs, frozen, batch_abs,
                          jax.ShapeDtypeStruct((), jnp.int32), rng_abs, TASK)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
  return {'size': size, 'method': method, 'batch': batch, 'length': length,
          'params_total': count(trainable) + count(frozen), 'params_trainable': count(trainable),
          'compile_s': compile_s,
          'argument_bytes': int(mem.argument_size_in_bytes),
          'output_bytes': int(mem.output_size_in_bytes),
          'temp_bytes': int(mem.temp_size_in_bytes),
          'alias_bytes': int(mem.alias_size_in_bytes),
          'generated_code_bytes': int(mem.generated_code_size_in_bytes)}


def _gib(n: int) -> str:
  return f'{n / 2**30:.2f} GiB'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--length', type=int, default=64)
  parser.add_argument('--memory', default='base,large', help='XLM-R sizes ("" to skip)')
  parser.add_argument('--memory_batch', type=int, default=32)
  parser.add_argument('--memory_length', type=int, default=128)
  parser.add_argument('--skip_speed', action='store_true')
  parser.add_argument('--json', default=None, help='also write the numbers here')
  args = parser.parse_args(argv)
  jax.config.update('jax_threefry_partitionable', True)
  out: dict[str, Any] = {'device': str(jax.devices()[0].device_kind), 'speed': [], 'memory': []}
  if not args.skip_speed:
    with encoder_dir(SMALL_ENCODER) as ckpt:
      out['speed'] = speed(ckpt, args.steps, args.batch, args.length)
    base = out['speed'][0]
    print(f'\ntrain step, encoder h={SMALL_ENCODER["hidden_size"]} '
          f'L={SMALL_ENCODER["num_hidden_layers"]}, batch {args.batch} x length {args.length} '
          f'on {out["device"]}:')
    print(f'{"method":<15}{"trainable":>12}{"compile s":>11}{"step ms":>10}{"ex/s":>9}'
          f'{"time vs hyperx":>16}')
    for r in out['speed']:
      print(f'{r["method"]:<15}{r["trainable_params"]:>12,}{r["compile_s"]:>11.2f}'
            f'{1e3 * r["step_s"]:>10.1f}{r["examples_per_s"]:>9.1f}'
            f'{r["step_s"] / base["step_s"]:>15.2f}x')
  for size in filter(None, args.memory.split(',')):
    out['memory'].append(memory(size, batch=args.memory_batch, length=args.memory_length))
  if out['memory']:
    print(f'\nAOT-compiled train step (Hyper-X, batch {args.memory_batch} x length '
          f'{args.memory_length}), memory_analysis():')
    for r in out['memory']:
      print(f'XLM-R {r["size"]:<6} params {r["params_total"] / 1e6:7.1f}M '
            f'(trainable {r["params_trainable"] / 1e6:.2f}M)  arguments '
            f'{_gib(r["argument_bytes"])}  outputs {_gib(r["output_bytes"])}  temporaries '
            f'{_gib(r["temp_bytes"])}  compile {r["compile_s"]:.1f}s')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=2)


if __name__ == '__main__':
  main()
