"""Forward + backward time of one train step: Hyper-X vs static adapters vs no adapters.

    python -m hyperx_jax.benchmarks.model_bench [--batch 8] [--length 128] [--repeats 7]

Encoder: multilingual-e5-small's shape (12 layers, h 384, 12 heads, FFN 1536) with a small
vocabulary (8k, not 250k) to keep memory sane; the vocabulary only changes the embedding
gather. Each variant's step is `jax.value_and_grad` w.r.t. its trainable state only (adapters
or hypernetwork + backbone LayerNorms + head); the frozen backbone is a separate,
non-differentiated argument (`nnx.split`). Variants are timed interleaved (one call of each per
round) and the median is reported with ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyperx_jax.benchmarks import common as bcommon
from hyperx_jax.config.sections import TaskSpec
from hyperx_jax.config.vocabulary import NER_LABELS, TOKEN
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.losses import compute_loss
from hyperx_jax.models.model import HyperXModel
from hyperx_jax.models.xlmr import EncoderConfig
from hyperx_jax.optim import trainable_filter

VOCAB = 8000
ADAPTED = [
    (r"^adapters/", True),
    (r"^heads/", True),
    (r"(^|/)(ln|attention_ln|output_ln)/", True),
    (r".*", False),
]
VARIANTS = {  # name -> (method, trainable rules)
    "hyperx": ("hyperx", ADAPTED),
    "static_adapters": ("task_adapters", ADAPTED),
    "no_adapters": ("full_finetune", ADAPTED),  # LayerNorms + head only
    "full_finetune": ("full_finetune", [(r".*", True)]),
}


def make_step(
    method: str, rules, encoder: EncoderConfig, bottleneck: int, batch: dict
) -> tuple[Callable[[], jax.Array], int]:
  """A jitted value_and_grad over the trainable state; returns (run-once fn, trainable count)."""
  ner = TaskSpec("ner", TOKEN, NER_LABELS, "entity_f1")
  model = HyperXModel(
      encoder,
      {"ner": ner},
      ["en", "tr"],
      method,
      HyperNetConfig(bottleneck=bottleneck),
      rngs=nnx.Rngs(0),
  )
  graphdef, trainable, frozen = nnx.split(model, trainable_filter(rules, model)[0], ...)

  @jax.jit
  def step(trainable, frozen, batch, rng):
    def loss_fn(trainable):
      return compute_loss(nnx.merge(graphdef, trainable, frozen), batch, "ner", rng)[0]

    return jax.value_and_grad(loss_fn)(trainable)

  rng = jax.random.key(0)
  jax.block_until_ready(step(trainable, frozen, batch, rng))  # compile
  n_trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(trainable))
  return lambda: jax.block_until_ready(step(trainable, frozen, batch, rng)), n_trainable


def make_batch(batch: int, length: int) -> dict:
  rng = np.random.default_rng(0)
  ids = rng.integers(3, VOCAB, (batch, length)).astype(np.int32)
  ids[:, 0] = 0
  labels = rng.integers(0, 7, (batch, length)).astype(np.int32)
  ones = np.ones(batch, np.int32)
  return {
      k: jnp.asarray(v)
      for k, v in dict(
          input_ids=ids,
          attention_mask=np.ones_like(ids),
          token_type_ids=np.zeros_like(ids),
          labels=labels,
          task_id=0 * ones,
          lang_id=ones,
          example_mask=ones,
      ).items()
  }


def main(argv=None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--bottleneck", type=int, default=256)
  parser.add_argument(
      "--variants",
      default=",".join(VARIANTS),
      help=f"comma-separated subset of {', '.join(VARIANTS)}",
  )
  args = parser.parse_args(argv)
  names = args.variants.split(",")
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
  encoder = EncoderConfig(
      vocab_size=VOCAB,
      hidden_size=384,
      num_layers=12,
      num_heads=12,
      intermediate_size=1536,
      max_positions=514,
  )
  batch = make_batch(args.batch, args.length)
  print(
      f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; encoder: e5-small shape "
      f"(12 layers, h 384, 12 heads, FFN 1536) with vocab {VOCAB} (not 250k); "
      f"batch {args.batch} x {args.length}; bottleneck {args.bottleneck}"
  )
  steps, sizes = {}, {}
  for name in names:
    t0 = time.perf_counter()
    steps[name], sizes[name] = make_step(*VARIANTS[name], encoder, args.bottleneck, batch)
    print(f"  compiled {name} in {time.perf_counter() - t0:.1f}s", flush=True)
  times = bcommon.time_interleaved(
      {name: lambda _, step=steps[name]: step() for name in names}, args.repeats, warmup=0
  )  # compiled above
  medians = {name: statistics.median(ts) for name, ts in times.items()}
  print(f"\n{'variant':<16} {'trainable':>12} {'median ms':>10} {'min ms':>8}")
  for name in names:
    print(
        f"{name:<16} {sizes[name]:>12,} {1e3 * medians[name]:>10.1f} "
        f"{1e3 * min(times[name]):>8.1f}"
    )
  for a, b in (
      ("hyperx", "static_adapters"),
      ("static_adapters", "no_adapters"),
      ("hyperx", "no_adapters"),
      ("full_finetune", "no_adapters"),
  ):
    if a in medians and b in medians:
      print(f"{a} / {b}: {medians[a] / medians[b]:.3f}x")
  return medians


if __name__ == "__main__":
  main()
