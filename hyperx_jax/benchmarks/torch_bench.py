"""Our Hyper-X train step against the same step in PyTorch, side by side in one process.

    python -m hyperx_jax.benchmarks.torch_bench [--batch 16] [--length 128] [--steps 10]
        [--warmup 2] [--method hyperx|task_adapters] [--dropout RATE] [--tiny] [--profile DIR]

Both sides run the same math on the same numbers (docs/method.md):

- encoder: multilingual-e5-small's XLM-R shape (12 layers, h 384, 12 heads, FFN 1536,
  vocabulary 250,037): the offline asset's config and weights when prepared
  (`python -m hyperx_jax.assets prepare`), else that shape with random weights. PyTorch runs it
  as `transformers.XLMRobertaModel` (its default attention implementation);
- adapters of `--method` after each layer's FFN output dense (section 5): in PyTorch hooked into
  `XLMRobertaOutput` by `torch_loader.place_adapters` and computed by
  `torch_loader.adapter_forward`. Hyper-X generates them at every step from the task, language
  and layer embeddings through the source projector and the generators (sections 2-4);
- trainable: the hypernetwork (or static adapters), the backbone LayerNorms and the token head,
  by our config's rules (section 6); the rest of the backbone is frozen and gets no gradients;
- loss: cross-entropy over the labelled pieces, with the configured dropout;
- optimiser: ours (`optim.make_optimizer`) as torch.optim.AdamW (fused) param groups, one per
  (lr multiplier, weight decay) pair, global-norm clipping, and a LambdaLR that reads our
  warm-up + linear-decay schedule. Both also report the trainer's metrics (loss, accuracy,
  gradient and parameter norms) and skip a non-finite step. float32 throughout.

The PyTorch modules start from a copy of our initial parameters; tests/test_torch_bench.py
checks at a tiny shape that the first steps' loss, gradients and updated parameters agree.

Timing: `--warmup` untimed steps of each, then `--steps` rounds of one step of ours and one of
PyTorch's, interleaved so that load drift hits both; median, quartiles and range per framework,
and the ratio ours / PyTorch of the medians; then each one's CPU per step (user and system
seconds, minor page faults), the temporaries XLA allocates for our step, and the GFLOP/s of
one matmul of the FFN's shape on each side. PyTorch gets one
intra-op thread per core of this process (XLA's CPU client uses them all by default). Inputs
look like tokenised sentences: rows of varied length padded to `--length`, Zipf-distributed
pieces, labels on word-initial pieces.

`--profile DIR` then traces `--profile_steps` of our steps with jax.profiler and prints XLA's
cost analysis of the step and the HLO ops that took the most time (see `profiling.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.nn import functional as F

from hyperx_jax.assets import asset_path
from hyperx_jax.benchmarks import profiling
from hyperx_jax.benchmarks.common import (
    NUM_LABELS,
    TASK,
    SpeedRun,
    bench_config,
    interleaved,
    time_interleaved,
)
from hyperx_jax.config import decode
from hyperx_jax.config.vocabulary import IGNORE_INDEX
from hyperx_jax.models import weights
from hyperx_jax.models.layers import is_dropout_rate
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.torch_reference import (
    TorchModel,
    our_params,
    torch_batch,
    torch_optimizer,
    torch_tensors,
)

MIRRORED_METHODS = ("hyperx", "task_adapters")  # the methods the PyTorch side builds
E5_SMALL = {
    "model_type": "xlm-roberta",
    "vocab_size": 250037,
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 514,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 1,
}  # multilingual-e5-small's config.json, when the asset is absent
TINY_ENCODER = {
    **E5_SMALL,
    "vocab_size": 512,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}
TINY_BOTTLENECK, TINY_PROJECTED = 16, 32  # --tiny: adapter.bottleneck, hyperx.projected_dim
CLS_ID, SEP_ID = 0, 2  # XLM-R's <s> and </s>
FIRST_PIECE = 5  # ids below are special tokens


# ------------------------------------------------------------------------- config and inputs


@contextlib.contextmanager
def encoder_checkpoint(tiny: bool) -> Iterator[tuple[str, bool]]:
  """(checkpoint directory, whether it has weights): the e5-small asset when prepared, else a
  temporary directory holding only a config.json of its shape (or the tiny one)."""
  asset = asset_path("e5-small")
  if not tiny and os.path.exists(os.path.join(asset, "config.json")):
    yield asset, os.path.exists(os.path.join(asset, weights.SAFETENSORS))
    return
  with tempfile.TemporaryDirectory() as directory:
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(TINY_ENCODER if tiny else E5_SMALL, f)
    yield directory, False


def torch_bench_config(
    method: str,
    checkpoint: str,
    batch: int,
    length: int,
    *,
    tiny: bool = False,
    dropout: Optional[float] = None,
):
  """train_bench's config (one token task, our default optimiser and trainable rules);
  `dropout` (None: the defaults) sets the hidden, attention and classifier rates."""
  c = bench_config(method, checkpoint, batch, length)
  if tiny:
    c.adapter.bottleneck, c.hyperx.projected_dim = TINY_BOTTLENECK, TINY_PROJECTED
  if dropout is not None:
    c.model.hidden_dropout = c.model.attention_dropout = c.model.classifier_dropout = dropout
  return c


def text_like_batch(batch: int, length: int, vocab: int, pad_id: int, seed: int = 0) -> dict:
  """A token-classification batch shaped like tokenised sentences: `<s> pieces </s>` rows of
  a quarter to all of `length` tokens, padded; pieces Zipf-distributed over the vocabulary; a
  label on each word-initial piece (60 %; mostly label 0, as NER's `O`), -100 elsewhere."""
  rng = np.random.default_rng(seed)
  ids = np.full((batch, length), pad_id, np.int32)
  labels = np.full((batch, length), IGNORE_INDEX, np.int32)
  for row, n in enumerate(rng.integers(max(3, length // 4), length + 1, batch)):
    pieces = FIRST_PIECE + rng.zipf(1.3, n - 2) % (vocab - FIRST_PIECE)
    ids[row, :n] = [CLS_ID, *pieces, SEP_ID]
    tags = np.where(rng.random(n - 2) < 0.8, 0, rng.integers(1, NUM_LABELS, n - 2))
    labels[row, 1 : n - 1] = np.where(rng.random(n - 2) < 0.6, tags, IGNORE_INDEX)
  ones = np.ones(batch, np.int32)
  return {
      "input_ids": ids,
      "attention_mask": (ids != pad_id).astype(np.int32),
      "token_type_ids": np.zeros_like(ids),
      "labels": labels,
      "task_id": 0 * ones,
      "lang_id": ones,
      "example_mask": ones,
  }


class TorchRun:
  """The train step in PyTorch from `ours`' initial state (take it before `ours` steps);
  `step()` and `times` as `SpeedRun`'s."""

  def __init__(self, ours: SpeedRun, local_batch: Mapping[str, np.ndarray]):
    spec, (trainable, _), encoder = ours.spec, ours.state, ours.model_config.encoder
    params = {**our_params(ours.frozen), **our_params(trainable)}
    self.model = TorchModel(ours.model_config, TASK, {p: v.shape for p, v in params.items()})
    self.model.load_state_dict(
        {n: torch.from_numpy(np.array(v)) for n, v in torch_tensors(params, encoder).items()},
        strict=True,
    )
    names = set(torch_tensors(our_params(trainable), encoder))
    for name, p in self.model.named_parameters():
      p.requires_grad_(name in names)
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.optimizer, self.schedule = torch_optimizer(self.model, spec, trainable)
    self.clip_norm = spec.optim.clip_norm
    self.batch = torch_batch(local_batch)
    self.model.train()
    self.times: list[float] = []
    self.metrics: dict[str, float] = {}

  def loss(self) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward: (loss, accuracy); the gradients are in `.grad`."""
    self.optimizer.zero_grad(set_to_none=True)
    b = self.batch
    logits = self.model(b)  # [B, S, n]
    labels = torch.where(b["example_mask"][:, None].bool(), b["labels"], IGNORE_INDEX)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    labelled = labels != IGNORE_INDEX
    accuracy = ((logits.argmax(-1) == labels) & labelled).sum() / labelled.sum().clamp(min=1)
    return loss.detach(), accuracy

  def step(self, timed: bool = True) -> None:
    t0 = time.perf_counter()
    loss, accuracy = self.loss()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params])
    if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):  # else keep the state, as ours
      if self.clip_norm:
        torch.nn.utils.clip_grads_with_norm_(self.params, self.clip_norm, grad_norm)
      self.optimizer.step()
      self.schedule.step()
    param_norm = torch.nn.utils.get_total_norm(self.params)
    if timed:
      self.times.append(time.perf_counter() - t0)
    self.metrics = {
        "loss": float(loss),
        "accuracy": float(accuracy),
        "grad_norm": float(grad_norm),
        "param_norm": float(param_norm),
    }


# ------------------------------------------------------------------------------ reporting


def spread(times: list[float]) -> dict[str, float]:
  """Median, quartiles and range of step times, in ms."""
  q = np.percentile(1e3 * np.asarray(times), [0, 25, 50, 75, 100])
  return dict(zip(("min", "p25", "median", "p75", "max"), map(float, q)))


class CpuTime:
  """A run whose timed steps also record the CPU they cost: user and system seconds and minor
  page faults of this process (`resource.getrusage`, every thread; the steps run one at a time,
  so a step's difference is its own). `step()` as the run's."""

  def __init__(self, run: Any):
    self.run = run
    self.samples: list[tuple[float, float, int]] = []  # (user s, system s, minor faults)

  def step(self, timed: bool = True) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)
    self.run.step(timed)
    if timed:
      after = resource.getrusage(resource.RUSAGE_SELF)
      self.samples.append(
          (
              after.ru_utime - before.ru_utime,
              after.ru_stime - before.ru_stime,
              after.ru_minflt - before.ru_minflt,
          )
      )


def cpu_report(ours: CpuTime, theirs: CpuTime) -> str:
  """Median CPU per step of each, and the temporaries XLA allocates for each of our steps (on
  CPU fresh memory each time: one minor fault per 4 KiB page touched)."""
  lines = [f'CPU per step (median, all threads):{"user s":>9}{"system s":>10}{"minor faults":>14}']
  for name, run in (("ours (JAX)", ours), ("PyTorch", theirs)):
    user, system, faults = np.median(np.asarray(run.samples), axis=0)
    lines.append(f"{name:<35}{user:>9.2f}{system:>10.2f}{faults:>14,.0f}")
  temp = ours.run.compiled.memory_analysis().temp_size_in_bytes
  lines.append(
      f"XLA temporaries of our step: {temp / 2**30:.2f} GiB ({temp / 4096:,.0f} pages of 4 KiB)"
  )
  return "\n".join(lines)


def matmul_rates(
    m: int, k: int, n: int, repeats: int = 20, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
  """GFLOP/s of one float32 [m, k] @ [k, n] matmul on each side, timed interleaved (median): the
  two backends' matrix multiplication alone, which most of a step's time goes to."""
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
  ours_mm, (ja, jb), (ta, tb) = (
      jax.jit(jnp.matmul),
      map(jnp.asarray, (a, b)),
      map(torch.from_numpy, (a, b)),
  )
  times = time_interleaved(
      {
          "ours (JAX)": lambda _: ours_mm(ja, jb).block_until_ready(),
          "PyTorch": lambda _: torch.mm(ta, tb),
      },
      repeats,
      clock=clock,
  )
  return {name: 2 * m * k * n / float(np.median(t)) / 1e9 for name, t in times.items()}


def matmul_report(enc: EncoderConfig, batch: int, length: int) -> str:
  m, k, n = batch * length, enc.hidden_size, enc.intermediate_size
  rates = matmul_rates(m, k, n)
  return (
      f"one {m} x {k} @ {k} x {n} matmul (the FFN's first, fp32): ours "
      f'{rates["ours (JAX)"]:.0f} GFLOP/s, PyTorch {rates["PyTorch"]:.0f} GFLOP/s'
  )


def report(ours: SpeedRun, theirs: TorchRun) -> str:
  rows = {"ours (JAX)": spread(ours.times), "PyTorch": spread(theirs.times)}
  lines = [f'{"framework":<12}{"median ms":>11}{"p25-p75 ms":>17}{"min-max ms":>17}']
  for name, s in rows.items():
    lines.append(
        f'{name:<12}{s["median"]:>11.1f}{s["p25"]:>9.1f}-{s["p75"]:<7.1f}'
        f'{s["min"]:>9.1f}-{s["max"]:<7.1f}'
    )
  ratio = rows["ours (JAX)"]["median"] / rows["PyTorch"]["median"]
  lines.append(f"ours / PyTorch (median step time): {ratio:.2f}x")
  return "\n".join(lines)


def profile(ours: SpeedRun, directory: str, steps: int) -> None:
  trace_file = profiling.trace(lambda: ours.step(timed=False), directory, steps)
  print(
      f"\njax.profiler trace of {steps} steps: {directory} (TensorBoard profile plugin; "
      f"Perfetto: {trace_file})"
  )
  print(profiling.cost_summary(ours.compiled))
  print(profiling.op_summary(trace_file, ours.compiled, steps))


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10, help="timed steps of each framework")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
  parser.add_argument("--method", choices=MIRRORED_METHODS, default="hyperx")
  parser.add_argument(
      "--tiny",
      action="store_true",
      help="smoke run: 2-layer h 32 encoder, vocab 512, batch 2 x 16, 2 steps",
  )
  parser.add_argument(
      "--profile",
      default=None,
      metavar="DIR",
      help="write a jax.profiler trace of our step here and summarise it",
  )
  parser.add_argument("--profile_steps", type=int, default=3)
  parser.add_argument(
      "--dropout",
      type=float,
      default=None,
      help="hidden, attention and classifier dropout of both (default: 0.1 each)",
  )
  parser.add_argument(
      "--torch_threads",
      type=int,
      default=None,
      help="PyTorch intra-op threads (default: the cores of this process)",
  )
  return parser


def build_runs(args: argparse.Namespace) -> tuple[SpeedRun, TorchRun, str]:
  """Our compiled step and the PyTorch one from the same initial state; a line saying what."""
  with encoder_checkpoint(args.tiny) as (checkpoint, pretrained):
    config = torch_bench_config(
        args.method, checkpoint, args.batch, args.length, tiny=args.tiny, dropout=args.dropout
    )
    enc = EncoderConfig.from_hf(checkpoint)
    local = text_like_batch(args.batch, args.length, enc.vocab_size, enc.pad_token_id)
    ours = SpeedRun(decode(config), local, load_pretrained=pretrained)
  what = (
      f"{args.method} train step, encoder h={enc.hidden_size} L={enc.num_layers} "
      f'V={enc.vocab_size} ({"pretrained" if pretrained else "random"} weights), batch '
      f"{args.batch} x {args.length}, fp32, dropout {ours.spec.model.hidden_dropout}, "
      f"{ours.trainable_params:,} trainable parameters"
  )
  return ours, TorchRun(ours, local), what


def main(argv=None) -> dict[str, Any]:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.dropout is not None and not is_dropout_rate(args.dropout):
    parser.error(f"--dropout {args.dropout}: expected a rate in [0, 1)")
  if args.tiny:
    args.batch, args.length, args.steps, args.warmup = 2, 16, 2, 1
  jax.config.update("jax_threefry_partitionable", True)
  cores = len(os.sched_getaffinity(0))
  threads = args.torch_threads or cores
  torch.set_num_threads(threads)
  ours, theirs, what = build_runs(args)
  print(what)
  print(
      f"ours: {jax.devices()[0].device_kind} via XLA, compiled in {ours.compile_s:.1f}s; "
      f"PyTorch {torch.__version__}: torch.set_num_threads({threads}) ({cores} cores in this "
      f"process), attention {theirs.model.encoder.config._attn_implementation}, AdamW fused"
  )
  cpu = CpuTime(ours), CpuTime(theirs)
  interleaved(cpu, args.steps, args.warmup)
  print(f"{args.warmup} warm-up + {args.steps} timed steps each, interleaved:")
  print(report(ours, theirs))
  print(cpu_report(*cpu))
  print(matmul_report(ours.model_config.encoder, args.batch, args.length))
  print(
      f'last step loss: ours {float(ours.metrics["loss"]):.4f}, PyTorch '
      f'{theirs.metrics["loss"]:.4f}'
  )
  if args.profile:
    profile(ours, args.profile, args.profile_steps)
  return {"ours": spread(ours.times), "torch": spread(theirs.times)}


if __name__ == "__main__":
  main()
