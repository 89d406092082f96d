"""gettext catalogues -> MLM text and an XNLI-shaped translation-pair task."""

from __future__ import annotations

import collections
import glob
import json
import os
import re
from typing import Iterable, Sequence

from hyperx_jax.assets.splits import split_indices
from hyperx_jax.data import sources

DEMO_LANGUAGES = ("ar", "de", "es", "fr", "ja", "ru", "tr", "zh_CN")
LOCALE_DIR = "/usr/share/locale"
MIN_CHARS = 21  # "strings > 20 chars"
# Bumped when the gettext-derived data change (2: untranslated strings left out of MLM text).
TEXT_DATA_VERSION = 2


def unique_parallel(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
  """One pair per English string up to case/punctuation; a msgctxt prefix is dropped."""
  seen, out = set(), []
  for en, tr in pairs:
    en = en.split("\x04")[-1]
    if word_key(en) not in seen and len(en) >= MIN_CHARS:
      seen.add(word_key(en))
      out.append((en, tr))
  return out


def words(s: str) -> list[str]:
  return re.findall(r"[a-z]{3,}", s.lower())


def word_key(s: str) -> str:
  """Strings equal up to case/punctuation (near-duplicates) share this key."""
  return " ".join(re.findall(r"[a-z0-9]+", s.lower()))


def hard_negatives(english: Sequence[str], max_postings: int = 48) -> list[int]:
  """For each English string, another string's index: sharing words, of similar length.

  Candidates come from the posting lists of the string's rarer words; the best is within
  2/3..3/2 of the length if any is, then has the most shared words, then the closest length. Strings sharing no word fall back to the neighbour
  in length order. Never the same string up to case/punctuation.
  """
  toks = [set(words(s)) for s in english]
  keys = [word_key(s) for s in english]
  postings = collections.defaultdict(list)
  for i, ws in enumerate(toks):
    for w in ws:
      postings[w].append(i)
  by_len = sorted(range(len(english)), key=lambda i: (len(english[i]), i))
  rank = {j: r for r, j in enumerate(by_len)}
  out = []
  for i, ws in enumerate(toks):
    shared = collections.Counter()
    for w in sorted(ws, key=lambda w: (len(postings[w]), w))[:4]:
      for j in postings[w][:max_postings]:
        shared[j] += 1
    n = len(english[i])
    best = min(
        (j for j in shared if keys[j] != keys[i]),
        key=lambda j: (
            not 2 * n / 3 <= len(english[j]) <= 3 * n / 2,
            -shared[j],
            abs(len(english[j]) - n),
            j,
        ),
        default=None,
    )
    if best is None:
      r = rank[i]
      best = by_len[r + 1] if r + 1 < len(by_len) else by_len[r - 1]
    out.append(best)
  return out


def pair_examples(pairs: Sequence[tuple[str, str]]) -> list[dict]:
  """Balanced translation / hard-unrelated examples, alternating per English string."""
  english = [en for en, _ in pairs]
  neg = hard_negatives(english)
  examples = []
  for i, (en, tr) in enumerate(pairs):
    if i % 2 == 0:
      examples.append({"premise": en, "hypothesis": tr, "label": "translation"})
    else:
      examples.append({"premise": en, "hypothesis": pairs[neg[i]][1], "label": "unrelated"})
  return examples


def write_lines(path: str, lines: Iterable[str]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(line + "\n" for line in lines)


def write_mo_data(
    lang: str, mo_dir: str, pairs_dir: str, locale_dir: str = LOCALE_DIR
) -> tuple[int, dict[str, int]]:
  """Writes `mo_dir/<lang>.txt` and `pairs_dir/<lang>/{split}.jsonl`; returns their counts."""
  sents = sources.mo_sentences(lang, MIN_CHARS - 1, locale_dir=locale_dir)
  write_lines(os.path.join(mo_dir, f"{lang}.txt"), sents)
  parallel = unique_parallel(sources.mo_parallel(lang, MIN_CHARS - 1, locale_dir=locale_dir))
  out = os.path.join(pairs_dir, lang)
  os.makedirs(out)
  counts = {}
  for name, idx in split_indices(len(parallel)).items():
    examples = pair_examples([parallel[i] for i in idx])
    write_lines(
        os.path.join(out, f"{name}.jsonl"), (json.dumps(e, ensure_ascii=False) for e in examples)
    )
    counts[name] = len(examples)
  return len(sents), counts


def available_languages(languages: Sequence[str], locale_dir: str = LOCALE_DIR) -> list[str]:
  return [l for l in languages if glob.glob(os.path.join(locale_dir, l, "LC_MESSAGES", "*.mo"))]
