"""How much of a padded batch is padding, and how many useful tokens a packed row holds.

The offline Turkish treebank POS training set and the Turkish gettext sentence pairs,
featurised with the e5-small (XLM-R) tokenizer at each length, then laid out one example per row
(padded) and packed with `features.Packer` in stream order, batch by batch, as the training
pipeline does with `data.packing` (needs `python -m hyperx_jax.assets prepare`).

  python -m hyperx_jax.benchmarks.packing_bench [--lengths 128,256] [--packing 4,8]
      [--time_batch 16] [--rounds 5] [--skip_time]

1. Counts: rows, sentences per row, useful (non-padding) tokens per row, padding share.
2. Time: the trainer's jitted Hyper-X step (`train_bench.SpeedRun`: AdamW, clipping, donation)
   on the e5-small shape (random weights) over one real padded batch and one real packed batch
   (the largest `--packing`) of `--time_batch` rows, timed interleaved (one step of each per
   round; median), and the useful tokens/s of each.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from configs import common  # noqa: E402
from hyperx_jax import assets, specs  # noqa: E402
from hyperx_jax.benchmarks import train_bench  # noqa: E402
from hyperx_jax.data import features, mixture, sources  # noqa: E402
from hyperx_jax.schema import PAIR, TOKEN  # noqa: E402
from hyperx_jax.tokenizer import load_tokenizer  # noqa: E402

PAIR_LABELS = ("translation", "unrelated")


def treebank() -> tuple[str, tuple[str, ...], list]:
  """The offline Turkish treebank's POS training set: (task kind, labels, raw examples)."""
  path = os.path.join(assets.asset_path("tr_pos"), "train.conllu")
  return TOKEN, tuple(common.UPOS_TAGS), sources.read_source(
      {"type": "conllu", "path": path, "tag_map": "google_universal_to_upos"})


def datasets(lang: str) -> dict[str, tuple[str, tuple[str, ...], list]]:
  """name -> (task kind, labels, raw examples)."""
  pairs = os.path.join(assets.asset_path("pairs"), lang, "train.jsonl")
  return {
      "pos (tr treebank)": treebank(),
      f"pairs ({lang} gettext)": (PAIR, PAIR_LABELS, sources.read_source(
          {"type": "jsonl", "path": pairs})),
  }


def featurised(kind: str, labels, raw: list, tokenizer, length: int
               ) -> tuple[list[features.Features], np.ndarray, features.Featurizer]:
  """The examples featurised at `length`, their real tokens each, and the featuriser."""
  featurizer = features.make_featurizer(kind, tokenizer, length, labels)
  examples = [f for f in (featurizer(ex) for ex in raw) if f is not None]
  return examples, np.array([features.length(f) for f in examples]), featurizer


def packed_rows(examples: list[features.Features], packer: features.Packer,
                batch_size: int) -> tuple[int, int]:
  """(rows, sentences placed) to pack one epoch in batches of `batch_size` rows (the last batch
  wraps into the next epoch, as the training stream does)."""
  rows = placed = 0
  while placed < len(examples):
    batch, taken = packer.fill(lambda i: examples[(placed + i) % len(examples)], batch_size)
    rows += len(batch)
    placed += taken
  return rows, placed


def report(name: str, kind: str, labels, raw: list, tokenizer, length: int,
           packing: list[int], batch_size: int) -> list[features.Features]:
  """Prints the counts; returns the featurised examples."""
  examples, tokens, featurizer = featurised(kind, labels, raw, tokenizer, length)
  stats = featurizer.stats()
  print(f"\n{name}, max_length {length}: {len(examples)} examples, tokens per example "
        f"mean {tokens.mean():.1f} / median {np.median(tokens):.0f} / max {tokens.max()}, "
        f"truncated {stats['truncated']}")
  print(f"  {'layout':<22}{'rows':>9}{'sentences/row':>15}{'useful tokens/row':>19}"
        f"{'padding':>9}")
  print(f"  {'padded (one per row)':<22}{len(examples):>9}{1.0:>15.2f}{tokens.mean():>19.1f}"
        f"{1 - tokens.mean() / length:>9.1%}")
  for k in packing:
    packer = features.Packer(length, k, tokenizer.pad_token_id)
    rows, placed = packed_rows(examples, packer, batch_size)
    used = tokens.sum() + tokens[:placed - len(examples)].sum()  # wrapped examples too
    print(f"  {f'packed, k = {k}':<22}{rows:>9}{placed / rows:>15.2f}{used / rows:>19.1f}"
          f"{1 - used / (rows * length):>9.1%}")
  return examples


BENCH_IDS = {"task_id": np.int32(0), "lang_id": np.int32(1), "example_mask": np.int32(1)}


def timed_batches(examples: list[features.Features], packer: features.Packer, rows: int
                  ) -> dict[str, dict[str, np.ndarray]]:
  """One padded and one packed batch of `rows` rows, both from the start of the stream."""
  with_ids = [{**f, **BENCH_IDS} for f in examples]
  packed, _ = packer.fill(lambda i: with_ids[i % len(with_ids)], rows)
  return {"padded": mixture.stack_examples(with_ids[:rows]),
          "packed": mixture.stack_examples(packed)}


def useful_tokens(batch: dict[str, np.ndarray]) -> int:
  return int(batch["attention_mask"].sum())


def sentences_in(batch: dict[str, np.ndarray]) -> int:
  segments = batch.get("segment_ids")
  return len(batch["input_ids"]) if segments is None else int(segments.max(axis=1).sum())


def time_layouts(kind: str, examples: list[features.Features], length: int, k: int, rows: int,
                 rounds: int, pad_id: int) -> dict[str, float]:
  """Hyper-X train steps over a padded and a packed batch, interleaved; useful tokens/s each."""
  batches = timed_batches(examples, features.Packer(length, k, pad_id), rows)
  config = train_bench.bench_config("hyperx", assets.asset_path("e5-small"), rows, length,
                                    kind=kind)
  spec = specs.decode(config)
  runs = [train_bench.SpeedRun(spec, batch, name=name) for name, batch in batches.items()]
  train_bench.interleaved(runs, rounds)
  results = [r.result() for r in runs]
  print(f"  Hyper-X train step, e5-small shape, {rows} rows x {length}, median of {rounds}:")
  print(f"  {'layout':<22}{'sentences':>10}{'useful tokens':>15}{'step s':>9}"
        f"{'useful tokens/s':>17}")
  rates = {}
  for r in results:
    batch = batches[r["method"]]
    rates[r["method"]] = useful_tokens(batch) / r["step_s"]
    label = "padded" if r["method"] == "padded" else f"packed, k = {k}"
    print(f"  {label:<22}{sentences_in(batch):>10}{useful_tokens(batch):>15}{r['step_s']:>9.2f}"
          f"{rates[r['method']]:>17.0f}")
  print(f"  packed / padded useful tokens/s: {rates['packed'] / rates['padded']:.2f}x")
  return rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", default="128,256", help="max_length values, comma-separated")
  parser.add_argument("--packing", default="4,8", help="data.packing values (sentences/row)")
  parser.add_argument("--batch_size", type=int, default=32, help="rows per packed batch")
  parser.add_argument("--lang", default="tr", help="language of the gettext pairs")
  parser.add_argument("--time_batch", type=int, default=16, help="rows of the timed batches")
  parser.add_argument("--rounds", type=int, default=5, help="timed steps of each layout")
  parser.add_argument("--skip_time", action="store_true", help="counts only")
  args = parser.parse_args()
  tokenizer = load_tokenizer(assets.asset_path("e5-small"))
  packing = [int(k) for k in args.packing.split(",")]
  for name, (kind, labels, raw) in datasets(args.lang).items():
    for length in (int(n) for n in args.lengths.split(",")):
      examples = report(name, kind, labels, raw, tokenizer, length, packing, args.batch_size)
      if not args.skip_time:
        time_layouts(kind, examples, length, max(packing), args.time_batch, args.rounds,
                     tokenizer.pad_token_id)


if __name__ == "__main__":
  main()
