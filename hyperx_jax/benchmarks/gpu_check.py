"""One command that checks a GPU: the trainer's Hyper-X step at XLM-R base shape, padded
against packed rows, XLA against cuDNN attention; step time, useful tokens/s and MFU.

    python -m hyperx_jax.benchmarks.gpu_check [--steps 20] [--batch 32] [--length 128]
        [--packing 8] [--lengths treebank|synthetic] [--peak_flops 989e12] [--out FILE]
    python -m hyperx_jax.benchmarks.gpu_check --tiny    # tiny shapes, a few steps (CPU, tests)

The step is `train.make_train_step` on a model built by `run.create_model` (random weights: no
hub access needed): XLM-R base (h 768, 12 layers, 12 heads, FFN 3072, vocabulary 250,002),
Hyper-X (b 256, P 192), a 17-tag token classification task (UPOS), bfloat16 compute, attention
dropout 0 (cuDNN has none; both arms alike). Rows are `--batch` x `--length` either way:
padded holds one sentence per row, packed as many sentences as fit, up to `--packing` a row
(`features.Packer`): a throughput check at one shape, where training instead puts
`data.batch_size` sentences into fewer rows (`data.packed_rows`). Sentence lengths in tokens
are the Turkish treebank's POS training sentences featurised with the e5-small tokenizer
(`python -m hyperx_jax.assets prepare`), or, where that asset is missing or `--lengths synthetic`, a log-normal fitted to them: exp(N(3.22, 0.52²))
rounded, clipped to [3, length] (treebank: mean 28.7 tokens, median 25, 95th percentile 59).

Every arm is compiled ahead of time and timed interleaved with the others (median of `--steps`
after two warm-up steps, each ended by `block_until_ready`). The arms that cannot run here
(cuDNN off a CUDA GPU) are listed with the reason. MFU = `train_step_flops` / step time / the
device's peak dense bfloat16 FLOP/s (PEAK_BF16_FLOPS; `--peak_flops` otherwise; n/a unknown).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from typing import Any, Optional

import jax
import numpy as np

from hyperx_jax import assets
from hyperx_jax.benchmarks import common as bcommon
from hyperx_jax.benchmarks import packing_bench
from hyperx_jax.config import RunSpec, decode, environment
from hyperx_jax.config.vocabulary import CUDNN_ATTENTION, IGNORE_INDEX, XLA_ATTENTION
from hyperx_jax.data import features
from hyperx_jax.models import attention
from hyperx_jax.models.adapters import adapter_shapes
from hyperx_jax.models.model import ModelConfig
from hyperx_jax.tokenizer import load_tokenizer

# Peak dense bfloat16 FLOP/s by device kind (first match in jax's device_kind): NVIDIA's data
# sheets, SXM parts; an H100 PCIe or NVL is slower and gets n/a (`--peak_flops`).
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 SXM", 989e12),
    ("H100 80GB HBM3", 989e12),
    ("A100", 312e12),
)
SYNTHETIC_LOG_MEAN, SYNTHETIC_LOG_STD = 3.22, 0.52  # log-normal tokens per treebank sentence
PAD_ID = 1  # XLM-R's <pad>; <s> = 0, </s> = 2
TINY_ENCODER = {
    **bcommon.SMALL_ENCODER,
    "vocab_size": 1000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}
TINY = dict(batch=4, length=64, packing=4, steps=2)


# ----------------------------------------------------------------------------- FLOPs


def train_step_flops(
    model: ModelConfig, rows: int, length: int, num_labels: int
) -> dict[str, float]:
  """Matmul FLOPs (2 per multiply-add) of one Hyper-X token-classification train step on
  [rows, length]; elementwise work (LayerNorm, GELU, softmax, AdamW) is not counted.

  Forward F of each part, then the backward it needs: input gradients (F again) everywhere
  the gradient flows (all layers: the embedding LayerNorm trains), weight gradients (F again)
  only for what trains or is generated. So the frozen dense layers count 2F, the attention
  products (q kᵀ and p v, over the full length x length of every row) 3F (dq and dk; dp and
  dv), and the adapters, the head and the hypernetwork (one source per layer) 3F each.
  """
  enc, hyper = model.encoder, model.hypernet
  h, f, layers = enc.hidden_size, enc.intermediate_size, enc.num_layers
  tokens = rows * length
  dense = 2 * (4 * h * h + 2 * h * f) * tokens * layers  # q, k, v, out; FFN in, out
  products = 2 * 2 * length * length * h * rows * layers  # q kᵀ and p v, all heads
  adapters = 2 * 2 * h * hyper.bottleneck * tokens * layers  # down, up
  head = 2 * h * num_labels * tokens
  generated = sum(
      int(np.prod(s))
      for s in adapter_shapes(h, hyper.bottleneck, hyper.conditional_layer_norm).values()
  )
  sd, p = hyper.source_dim, hyper.generator_in_dim
  projector = 2 * (sd * sd + sd * p) if hyper.use_projector else 0
  hypernet = (projector + 2 * p * generated) * layers
  return {
      "backbone": 2.0 * dense,
      "attention": 3.0 * products,
      "adapters": 3.0 * adapters,
      "head": 3.0 * head,
      "hypernet": 3.0 * hypernet,
  }


def peak_flops(device_kind: str) -> Optional[float]:
  return next((flops for name, flops in PEAK_BF16_FLOPS if name in device_kind), None)


# ----------------------------------------------------------------------------- batches


def sentence_lengths(source: str, length: int, count: int, seed: int = 0) -> tuple[np.ndarray, str]:
  """`count` sentence lengths in tokens (<s> and </s> included, at most `length`) and where
  they came from: the treebank in file order (cycled), or the synthetic log-normal."""
  needed = [assets.asset_path(name) for name in ("tr_pos", "e5-small")]
  if source == "treebank" and all(os.path.exists(p) for p in needed):
    tokenizer = load_tokenizer(needed[1])
    _, tokens, _ = packing_bench.featurised(*packing_bench.treebank(), tokenizer, length)
    return np.resize(tokens, count), "Turkish treebank (POS train), e5-small tokenizer"
  if source == "treebank":
    print(f"no prepared treebank and tokenizer at {needed}: synthetic lengths")
  drawn = np.exp(np.random.default_rng(seed).normal(SYNTHETIC_LOG_MEAN, SYNTHETIC_LOG_STD, count))
  return (
      np.clip(np.round(drawn), 3, length).astype(int),
      f"synthetic log-normal exp(N({SYNTHETIC_LOG_MEAN}, {SYNTHETIC_LOG_STD}²))",
  )


def sentence(n: int, length: int, vocab: int, num_labels: int, rng) -> features.Features:
  """A featurised token-classification example: `<s> random ids </s>`, a tag on each."""
  ids = np.full([length], PAD_ID, np.int32)
  ids[0], ids[1 : n - 1], ids[n - 1] = 0, rng.integers(5, vocab, n - 2), 2
  labels = np.full([length], IGNORE_INDEX, np.int32)
  labels[1 : n - 1] = rng.integers(0, num_labels, n - 2)
  return {
      "input_ids": ids,
      "attention_mask": (np.arange(length) < n).astype(np.int32),
      "token_type_ids": np.zeros([length], np.int32),
      "labels": labels,
  }


def batches(
    lengths: np.ndarray, rows: int, length: int, packing: int, vocab: int, num_labels: int
) -> dict[str, dict[str, np.ndarray]]:
  """'padded' (the first `rows` sentences) and 'packed, k = …' (as many as fit `rows`)."""
  rng = np.random.default_rng(0)
  examples = [sentence(int(n), length, vocab, num_labels, rng) for n in lengths]
  packer = features.Packer(length, packing, PAD_ID)
  layouts = packing_bench.padded_and_packed(examples, packer, rows)
  return {"padded": layouts["padded"], f"packed, k = {packing}": layouts["packed"]}


# ----------------------------------------------------------------------------- the check


def arm_spec(
    checkpoint: Optional[str], rows: int, length: int, kernel: str, packing: int, tiny: bool
) -> RunSpec:
  c = bcommon.bench_config("hyperx", checkpoint, rows, length)
  c.model.dtype = "bfloat16"
  c.model.attention = kernel
  c.model.attention_dropout = 0.0
  c.data.packing = packing
  if tiny:
    c.adapter.bottleneck = c.hyperx.projected_dim = 16
    c.hyperx.task_dim = c.hyperx.lang_dim = c.hyperx.layer_dim = 8
  return decode(c)


def check(args: argparse.Namespace, checkpoint: Optional[str]) -> dict[str, Any]:
  """Builds, compiles and times every arm that can run here; the numbers as a dict."""
  kind = jax.devices()[0].device_kind
  peak = args.peak_flops or peak_flops(kind)
  arm = lambda kernel: arm_spec(
      checkpoint, args.batch, args.length, kernel, args.packing, args.tiny
  )
  base = arm(XLA_ATTENTION)
  enc = environment.encoder_config(base)
  lengths, source = sentence_lengths(args.lengths, args.length, args.batch * args.packing * 2)
  layouts = batches(
      lengths, args.batch, args.length, args.packing, enc.vocab_size, bcommon.NUM_LABELS
  )
  blockers = attention.cudnn_blockers(
      attention.local_device(),
      dtype=enc.dtype,
      head_dim=enc.head_dim,
      max_length=args.length,
      packed=True,
  )
  kernels = {XLA_ATTENTION: base, **({} if blockers else {CUDNN_ATTENTION: arm(CUDNN_ATTENTION)})}
  runs, arms = [], []
  for kernel, spec in kernels.items():
    for layout, batch in layouts.items():
      runs.append(bcommon.SpeedRun(spec, batch, name=f"{layout} / {kernel}"))
      arms.append(
          {
              "layout": layout,
              "attention": kernel,
              "sentences": packing_bench.sentences_in(batch),
              "useful_tokens": packing_bench.useful_tokens(batch),
          }
      )
  flops = train_step_flops(
      environment.model_config(base), args.batch, args.length, bcommon.NUM_LABELS
  )
  total = sum(flops.values())
  bcommon.interleaved(runs, args.steps, warmup=2)
  for arm, r in zip(arms, (speed_run.result() for speed_run in runs)):
    arm.update(
        compile_s=r["compile_s"],
        step_s=r["step_s"],
        first_loss=r["first_loss"],
        last_loss=r["last_loss"],
        useful_tokens_per_s=arm["useful_tokens"] / r["step_s"],
        mfu=total / r["step_s"] / peak if peak else None,
    )
  return {
      "device": kind,
      "peak_flops": peak,
      "encoder": encoder_summary(enc),
      "batch": args.batch,
      "length": args.length,
      "packing": args.packing,
      "lengths": source,
      "mean_sentence_tokens": float(lengths.mean()),
      "flops_per_step": flops,
      "cudnn_skipped": blockers,
      "arms": arms,
  }


def encoder_summary(enc) -> dict[str, Any]:
  return {
      k: getattr(enc, k)
      for k in (
          "hidden_size",
          "num_layers",
          "num_heads",
          "intermediate_size",
          "vocab_size",
          "dtype",
      )
  }


def print_report(out: dict[str, Any]) -> None:
  e = out["encoder"]
  peak = (
      f"peak {out['peak_flops'] / 1e12:.0f} TFLOP/s bf16"
      if out["peak_flops"]
      else ("peak unknown: MFU n/a (--peak_flops)")
  )
  flops = out["flops_per_step"]
  print(
      f"\nHyper-X train step, encoder h {e['hidden_size']}, {e['num_layers']} layers, "
      f"{e['num_heads']} heads, FFN {e['intermediate_size']}, vocabulary "
      f"{e['vocab_size']:,}, {e['dtype']}; batch {out['batch']} x {out['length']} on "
      f"{out['device']} ({peak})"
  )
  print(f"sentence lengths: {out['lengths']}, mean {out['mean_sentence_tokens']:.1f} tokens")
  print(
      f"FLOPs per step {sum(flops.values()):.4g}: "
      + ", ".join(f"{k} {v:.3g}" for k, v in flops.items())
  )
  print(
      f"{'layout':<15}{'attention':<11}{'sentences':>10}{'useful tok':>11}{'compile s':>10}"
      f"{'step ms':>9}{'useful tok/s':>14}{'MFU':>7}{'loss first -> last':>21}"
  )
  for a in out["arms"]:
    mfu = "n/a" if a["mfu"] is None else f"{a['mfu']:.1%}"
    print(
        f"{a['layout']:<15}{a['attention']:<11}{a['sentences']:>10}{a['useful_tokens']:>11}"
        f"{a['compile_s']:>10.1f}{1e3 * a['step_s']:>9.1f}{a['useful_tokens_per_s']:>14,.0f}"
        f"{mfu:>7}{a['first_loss']:>12.4f} -> {a['last_loss']:.4f}"
    )
  for reason in out["cudnn_skipped"]:
    print(f"cudnn arms skipped: {reason}")


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--steps", type=int, default=20, help="timed steps per arm")
  parser.add_argument("--batch", type=int, default=32, help="rows per batch")
  parser.add_argument("--length", type=int, default=128, help="tokens per row")
  parser.add_argument("--packing", type=int, default=8, help="sentences per packed row, at most")
  parser.add_argument("--lengths", choices=("treebank", "synthetic"), default="treebank")
  parser.add_argument(
      "--peak_flops",
      type=float,
      default=None,
      help="the device's peak bf16 FLOP/s (default: PEAK_BF16_FLOPS)",
  )
  parser.add_argument(
      "--tiny", action="store_true", help=f"a tiny encoder and {TINY} (overriding those flags)"
  )
  parser.add_argument("--out", default=None, help="also write the numbers here (JSON)")
  args = parser.parse_args(argv)
  if args.tiny:
    vars(args).update(TINY)
  jax.config.update("jax_threefry_partitionable", True)
  with (
      bcommon.encoder_dir(TINY_ENCODER) if args.tiny else contextlib.nullcontext(None)
  ) as checkpoint:
    out = check(args, checkpoint)
  print_report(out)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
