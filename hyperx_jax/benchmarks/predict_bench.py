"""Labelling a mixed-language file: one pass against one call per language, and against the
exported static adapters in PyTorch.

The pair task of a trained run (`--workdir`, e.g. the offline demo's), `--examples` test pairs
of each of `--langs` (the offline gettext pairs; a language the run never trained reads its
typology or mean vector, as `hyperx predict` does), shuffled into one mixed list. Per round
(median over `--rounds`, one call of each column per round: `bcommon.time_interleaved`):

  one pass      `Predictor.predict` on the mixed list: each language's adapters generated once,
                languages mixed within batches
  per language  one `Predictor.predict` call per language on its own examples
  PyTorch       (`--torch`; the languages the run trained) each language exported with
                `export_from_run` and run by `torch_loader`, one model per language

The adapter cache is emptied before each JAX column, so both include generating the adapters;
generating one language's adapters is also timed alone. The two JAX columns must give the same
probabilities (checked), and PyTorch's labels are compared with them.

  python -m hyperx_jax.benchmarks.predict_bench --workdir=RUN [--task pairs]
      [--langs de,tr,ar,es,fr,ja,ru,zh_CN] [--examples 50] [--rounds 3] [--torch]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from hyperx_jax import assets, run  # noqa: E402
from hyperx_jax.benchmarks import common as bcommon  # noqa: E402
from hyperx_jax.data import sources  # noqa: E402
from hyperx_jax.predict import Predictor  # noqa: E402


def read_pairs(lang: str, n: int) -> list[dict]:
  """The first n test pairs of `lang` from the offline gettext pairs (the jsonl source)."""
  path = os.path.join(assets.asset_path("pairs"), lang, "test.jsonl")
  rows = sources.read_source({"type": "jsonl", "path": path, "max_examples": n})
  return [{"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in rows]


def timed(fn) -> tuple[float, object]:
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def as_array(prediction) -> np.ndarray:
  """A pair prediction's probabilities [labels], in the task's label order."""
  return np.asarray(list(prediction.probabilities.values()))


def one_pass(predictor: Predictor, examples, langs, task: str) -> np.ndarray:
  predictor.adapter_cache.clear()
  return np.stack([as_array(p) for p in predictor.predict(examples, task, langs)])


def per_language(predictor: Predictor, examples, langs, task: str) -> np.ndarray:
  predictor.adapter_cache.clear()
  out = [None] * len(examples)
  for lang in dict.fromkeys(langs):
    idx = [i for i, l in enumerate(langs) if l == lang]
    preds = predictor.predict([examples[i] for i in idx], task, [lang] * len(idx))
    for i, p in zip(idx, preds):
      out[i] = as_array(p)
  return np.stack(out)


def torch_column(workdir: str, task: str, by_lang: dict, batch_size: int, max_length: int):
  """{lang: (seconds, probabilities)} of each exported language in PyTorch."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  from hyperx_jax import export, torch_loader  # pylint: disable=g-import-not-at-top

  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for lang, examples in by_lang.items():
      directory = os.path.join(tmp, lang)
      export.export_from_run(workdir, task, lang, directory)
      model = torch_loader.load_exported(directory)
      tokenizer = transformers.AutoTokenizer.from_pretrained(directory)

      def label_all(model=model, tokenizer=tokenizer, examples=examples):
        probs = []
        with torch.no_grad():
          for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            enc = tokenizer(
                [e["premise"] for e in chunk],
                [e["hypothesis"] for e in chunk],
                truncation=True,
                max_length=max_length,
                padding="max_length",
                return_tensors="pt",
            )
            logits = model(enc["input_ids"], enc["attention_mask"]).logits
            probs.append(torch.softmax(logits.float(), -1).numpy())
        return np.concatenate(probs)

      label_all()  # warm-up
      out[lang] = timed(label_all)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained run with a pair task")
  parser.add_argument("--task", default="pairs")
  parser.add_argument("--langs", default="de,tr,ar,es,fr,ja,ru,zh_CN")
  parser.add_argument("--examples", type=int, default=50, help="test pairs per language")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--torch", action="store_true", help="also the exported adapters in PyTorch")
  args = parser.parse_args()

  langs = args.langs.split(",")
  by_lang = {lang: read_pairs(lang, args.examples) for lang in langs}
  mixed = [(e, lang) for lang in langs for e in by_lang[lang]]
  random.Random(0).shuffle(mixed)
  examples, example_langs = [e for e, _ in mixed], [lang for _, lang in mixed]
  predictor = Predictor.from_run(args.workdir, languages=langs)
  print(
      f"{args.workdir}: {len(examples)} {args.task} examples in {len(langs)} languages, batch "
      f"{predictor.batch_size}, vectors {', '.join(f'{l}: {predictor.vector(l)}' for l in langs)}"
  )

  columns = {"one pass": one_pass, "per language": per_language}
  outputs = {
      name: fn(predictor, examples, example_langs, args.task) for name, fn in columns.items()
  }
  gap = float(np.abs(outputs["one pass"] - outputs["per language"]).max())
  print(f"compiled; one pass against per language: max |probability difference| {gap:.2e}")
  seconds = bcommon.time_interleaved(
      {
          name: lambda _, fn=fn: fn(predictor, examples, example_langs, args.task)
          for name, fn in columns.items()
      },
      repeats=args.rounds,
      warmup=0,  # compiled above
  )
  generation = []
  for lang in langs:
    predictor.adapter_cache.clear()
    generation.append(
        timed(lambda lang=lang: jax.block_until_ready(predictor.adapters(args.task, (lang,))))[0]
    )

  print(f"\n| column | seconds (median of {args.rounds}) | examples/s |")
  print("|---|---:|---:|")
  for name, values in seconds.items():
    s = statistics.median(values)
    print(f"| {name} | {s:.2f} | {len(examples) / s:.1f} |")
  print(f"| generating one language's adapters | {statistics.median(generation) * 1e3:.1f} ms | |")

  if args.torch:
    trained = [lang for lang in langs if lang in run.load_config(args.workdir).languages]
    torch_times = torch_column(
        args.workdir,
        args.task,
        {lang: by_lang[lang] for lang in trained},
        predictor.batch_size,
        predictor.max_length,
    )
    total = sum(s for s, _ in torch_times.values())
    n = sum(len(by_lang[lang]) for lang in trained)
    position = {id(e): i for i, e in enumerate(examples)}
    ours = np.concatenate(
        [outputs["one pass"][[position[id(e)] for e in by_lang[lang]]] for lang in trained]
    ).argmax(-1)
    theirs = np.concatenate([p for _, p in torch_times.values()]).argmax(-1)
    print(
        f"| PyTorch, exported static adapters ({len(trained)} languages: {', '.join(trained)}) "
        f"| {total:.2f} | {n / total:.1f} |"
    )
    print(
        f"\nPyTorch labels equal to ours on {100 * float((ours == theirs).mean()):.1f} % of "
        f"{n} examples"
    )


if __name__ == "__main__":
  main()
