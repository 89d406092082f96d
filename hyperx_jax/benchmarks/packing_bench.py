"""How much of a padded batch is padding, and how few rows hold the same sentences packed.

The offline Turkish treebank POS training set, and the gettext sentence pairs and masked-LM
text (the mixed and demo configs' MLM source) of `--lang`, featurised with the e5-small (XLM-R)
tokenizer at each length, then laid out one example per row (padded) and packed with
`features.Packer` in stream order, batch by batch, as the training pipeline does with
`data.packing` = k and `data.packed_rows` (needs `python -m hyperx_jax.assets prepare`).

  python -m hyperx_jax.benchmarks.packing_bench [--lengths 128,256] [--packing 4,8]
      [--batch_size 32] [--lang tr] [--time_batch 16] [--time_rows 4] [--rounds 5]
      [--skip_time]

1. Counts, to choose data.packed_rows: the padding share of padded batches; then for each k and
   rows = 1/8 ... 1/2 of `--batch_size`, one epoch packed as training packs it: the share of
   batches that fall short of `--batch_size` sentences (the next one fit no row), sentences per
   batch and the padding left.
2. Time: the trainer's jitted Hyper-X step (`bcommon.SpeedRun`: AdamW, clipping, donation)
   on the e5-small shape (random weights) over the stream's first `--time_batch` sentences,
   padded (one a row) and packed into `--time_rows` rows (the largest `--packing`), timed
   interleaved (one step of each per round; median), and the useful tokens/s of each.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from hyperx_jax import assets  # noqa: E402
from hyperx_jax.benchmarks import common as bcommon  # noqa: E402
from hyperx_jax.config import decode  # noqa: E402
from hyperx_jax.config import common
from hyperx_jax.config.sections import StreamSpec
from hyperx_jax.config.vocabulary import MLM, PAIR, TOKEN
from hyperx_jax.data import features, mixture, pipeline, sources  # noqa: E402
from hyperx_jax.tokenizer import load_tokenizer  # noqa: E402

PAIR_LABELS = ("translation", "unrelated")


def treebank() -> tuple[str, tuple[str, ...], list]:
  """The offline Turkish treebank's POS training set: (task kind, labels, raw examples)."""
  path = os.path.join(assets.asset_path("tr_pos"), "train.conllu")
  return (
      TOKEN,
      tuple(common.UPOS_TAGS),
      sources.read_source({"type": "conllu", "path": path, "tag_map": "google_universal_to_upos"}),
  )


def pairs_languages() -> list[str]:
  """The languages with prepared gettext pairs (their text is also the MLM source)."""
  root = assets.asset_path("pairs")
  return sorted(
      lang
      for lang in (os.listdir(root) if os.path.isdir(root) else ())
      if os.path.isfile(os.path.join(root, lang, "train.jsonl"))
  )


def datasets(lang: str) -> dict[str, tuple[str, tuple[str, ...], list]]:
  """name -> (task kind, labels, raw examples)."""
  pairs = os.path.join(assets.asset_path("pairs"), lang, "train.jsonl")
  return {
      "pos (tr treebank)": treebank(),
      f"pairs ({lang} gettext)": (
          PAIR,
          PAIR_LABELS,
          sources.read_source({"type": "jsonl", "path": pairs}),
      ),
      f"mlm ({lang} gettext text)": (MLM, (), sources.read_source({"type": "mo", "lang": lang})),
  }


def featurised(
    kind: str, labels, raw: list, tokenizer, length: int
) -> tuple[list[features.Features], np.ndarray, features.Featurizer]:
  """The examples featurised at `length` as a training stream featurises them (MLM masks line i
  with seed i), their real tokens each, and the featuriser."""
  spec = StreamSpec(
      task=kind,
      lang="bench",
      kind=kind,
      labels=tuple(labels),
      source={},
      task_id=int(BENCH_IDS["task_id"]),
      lang_id=int(BENCH_IDS["lang_id"]),
  )
  featurizer, featurize = pipeline.make_example_fn(spec, tokenizer, length)
  examples = [
      f
      for f in (featurize(ex, np.random.default_rng(i)) for i, ex in enumerate(raw))
      if f is not None
  ]
  return examples, np.array([features.length(f) for f in examples]), featurizer


def pack_epoch(
    examples: list[features.Features], packer: features.Packer, batch_size: int, rows: int
) -> np.ndarray:
  """Sentences each batch took when one epoch is packed as the training stream packs it:
  `batch_size` sentences a batch at most, in `rows` rows, in stream order (the last batch wraps
  into the next epoch)."""
  taken_per_batch, placed = [], 0
  while placed < len(examples):
    _, taken = packer.fill(
        lambda i: examples[(placed + i) % len(examples)], rows, max_examples=batch_size
    )
    taken_per_batch.append(taken)
    placed += taken
  return np.array(taken_per_batch)


def row_choices(batch_size: int) -> list[int]:
  """The data.packed_rows tried: 1/8, 1/4, 3/8 and 1/2 of the batch (at least one row)."""
  return sorted({max(batch_size * n // 8, 1) for n in (1, 2, 3, 4)})


def report(
    name: str,
    kind: str,
    labels,
    raw: list,
    tokenizer,
    length: int,
    packing: list[int],
    batch_size: int,
) -> list[features.Features]:
  """Prints the counts; returns the featurised examples."""
  examples, tokens, featurizer = featurised(kind, labels, raw, tokenizer, length)
  stats = featurizer.stats()
  print(
      f"\n{name}, max_length {length}: {len(examples)} examples, tokens per example "
      f"mean {tokens.mean():.1f} / median {np.median(tokens):.0f} / max {tokens.max()}, "
      f"truncated {stats['truncated']}"
  )
  print(
      f"  batches of {batch_size} sentences; padded, {batch_size} rows: padding "
      f"{1 - tokens.mean() / length:.1%}"
  )
  print(
      f"  {'packed_rows':>13}{'k':>4}{'rows saved':>12}{'short batches':>15}"
      f"{'sentences/batch':>17}{'padding':>9}"
  )
  for k in packing:
    packer = features.Packer(length, k, tokenizer.pad_token_id)
    for rows in row_choices(batch_size):
      taken = pack_epoch(examples, packer, batch_size, rows)
      used = tokens.sum() + tokens[: taken.sum() - len(examples)].sum()  # wrapped examples too
      print(
          f"  {rows:>13}{k:>4}{batch_size / rows:>11.1f}x{(taken < batch_size).mean():>15.1%}"
          f"{taken.mean():>17.1f}{1 - used / (len(taken) * rows * length):>9.1%}"
      )
  return examples


BENCH_IDS = {"task_id": np.int32(0), "lang_id": np.int32(1), "example_mask": np.int32(1)}


def padded_and_packed(
    examples: list[features.Features],
    packer: features.Packer,
    rows: int,
    packed_rows: int | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """The stream's first `rows` sentences padded (one a row), and packed: the same sentences in
  `packed_rows` rows (as many as fit: a training batch of `data.packed_rows`), or, without
  `packed_rows`, as many sentences as fit in `rows` rows (one shape for both layouts)."""
  with_ids = [{**f, **BENCH_IDS} for f in examples]
  packed, _ = packer.fill(
      lambda i: with_ids[i % len(with_ids)],
      packed_rows or rows,
      max_examples=None if packed_rows is None else rows,
  )
  return {
      "padded": mixture.stack_examples(with_ids[:rows]),
      "packed": mixture.stack_examples(packed),
  }


def useful_tokens(batch: dict[str, np.ndarray]) -> int:
  return int(batch["attention_mask"].sum())


def sentences_in(batch: dict[str, np.ndarray]) -> int:
  segments = batch.get("segment_ids")
  return len(batch["input_ids"]) if segments is None else int(segments.max(axis=1).sum())


def time_layouts(
    kind: str,
    examples: list[features.Features],
    length: int,
    k: int,
    batch_size: int,
    rows: int,
    rounds: int,
    pad_id: int,
) -> dict[str, float]:
  """Hyper-X train steps over `batch_size` sentences padded and packed into `rows` rows,
  interleaved; useful tokens/s each."""
  batches = padded_and_packed(examples, features.Packer(length, k, pad_id), batch_size, rows)
  runs = [
      bcommon.SpeedRun(
          decode(
              bcommon.bench_config(
                  "hyperx",
                  assets.asset_path("e5-small"),
                  len(batch["input_ids"]),
                  length,
                  kind=kind,
              )
          ),
          batch,
          name=name,
      )
      for name, batch in batches.items()
  ]
  bcommon.interleaved(runs, rounds)
  results = [r.result() for r in runs]
  print(f"  Hyper-X train step, e5-small shape, length {length}, median of {rounds}:")
  print(
      f"  {'layout':<22}{'rows':>6}{'sentences':>10}{'useful tokens':>15}{'step s':>9}"
      f"{'useful tokens/s':>17}"
  )
  rates = {}
  for r in results:
    batch = batches[r["method"]]
    rates[r["method"]] = useful_tokens(batch) / r["step_s"]
    label = "padded" if r["method"] == "padded" else f"packed, k = {k}"
    print(
        f"  {label:<22}{len(batch['input_ids']):>6}{sentences_in(batch):>10}"
        f"{useful_tokens(batch):>15}{r['step_s']:>9.2f}{rates[r['method']]:>17.0f}"
    )
  print(f"  packed / padded useful tokens/s: {rates['packed'] / rates['padded']:.2f}x")
  return rates


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--lengths", default="128,256", help="max_length values, comma-separated")
  parser.add_argument("--packing", default="4,8", help="data.packing values (sentences/row)")
  parser.add_argument("--batch_size", type=int, default=32, help="sentences per batch")
  parser.add_argument("--lang", default="tr", help="language of the gettext pairs and text")
  parser.add_argument(
      "--time_batch",
      type=int,
      default=16,
      help="sentences of the timed batches (padded: one row each)",
  )
  parser.add_argument(
      "--time_rows", type=int, default=4, help="rows of the timed packed batch (data.packed_rows)"
  )
  parser.add_argument("--rounds", type=int, default=5, help="timed steps of each layout")
  parser.add_argument("--skip_time", action="store_true", help="counts only")
  args = parser.parse_args(argv)
  if min(args.batch_size, args.time_batch, args.rounds) < 1:
    parser.error("--batch_size, --time_batch and --rounds must be >= 1")
  if not 1 <= args.time_rows <= args.time_batch:
    parser.error(f"--time_rows {args.time_rows}: expected 1 .. --time_batch ({args.time_batch})")
  pair_languages = pairs_languages()
  if args.lang not in pair_languages:
    prepared = ", ".join(pair_languages) or "none (python -m hyperx_jax.assets prepare)"
    parser.error(
        f"--lang {args.lang}: no gettext pairs under {assets.asset_path('pairs')}; "
        f"prepared: {prepared}"
    )
  tokenizer = load_tokenizer(assets.asset_path("e5-small"))
  packing = [int(k) for k in args.packing.split(",")]
  for name, (kind, labels, raw) in datasets(args.lang).items():
    for length in (int(n) for n in args.lengths.split(",")):
      examples = report(name, kind, labels, raw, tokenizer, length, packing, args.batch_size)
      if not args.skip_time:
        time_layouts(
            kind,
            examples,
            length,
            max(packing),
            args.time_batch,
            args.time_rows,
            args.rounds,
            tokenizer.pad_token_id,
        )


if __name__ == "__main__":
  main()
