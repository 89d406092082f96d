"""How much of a padded batch is padding, and how many useful tokens a packed row holds.

Counts only (no timing): the offline Turkish treebank POS training set and the Turkish gettext
sentence pairs, featurised with the e5-small (XLM-R) tokenizer at each length, then laid out one
example per row (padded) and packed with `features.Packer` in stream order, batch by batch, as
the training pipeline does with `data.packing` (needs `python -m hyperx_jax.assets prepare`).

  python -m hyperx_jax.benchmarks.packing_bench [--lengths 128,256] [--packing 4,8]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from configs import common  # noqa: E402
from hyperx_jax import assets  # noqa: E402
from hyperx_jax.data import features, sources  # noqa: E402
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
           packing: list[int], batch_size: int) -> None:
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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", default="128,256", help="max_length values, comma-separated")
  parser.add_argument("--packing", default="4,8", help="data.packing values (sentences/row)")
  parser.add_argument("--batch_size", type=int, default=32, help="rows per packed batch")
  parser.add_argument("--lang", default="tr", help="language of the gettext pairs")
  args = parser.parse_args()
  tokenizer = load_tokenizer(assets.asset_path("e5-small"))
  packing = [int(k) for k in args.packing.split(",")]
  for name, (kind, labels, raw) in datasets(args.lang).items():
    for length in (int(n) for n in args.lengths.split(",")):
      report(name, kind, labels, raw, tokenizer, length, packing, args.batch_size)


if __name__ == "__main__":
  main()
