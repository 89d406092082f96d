"""Turkish treebank wheel -> train/dev/test CoNLL-U files and a README."""

from __future__ import annotations

import os
import re

from hyperx_jax.assets.splits import SEED, split_indices
from hyperx_jax.assets.wheels import TREEBANK_FILES, read_member

TREEBANK_README = """\
Turkish treebank (web + wiki), from the `turkish-treebanks==1.0.0` wheel (Apache-2.0),
split {counts} by a seeded shuffle of sentence order (seed {seed}).

The UPOS column holds the Google universal tagset, not UD UPOS: read it with the CoNLL-U
reader's `tag_map="google_universal_to_upos"` option (CONJ->CCONJ, PRT->PART, ONOM->INTJ, anything else outside UPOS->X).
Tokens are inflectional groups.
"""


def conllu_sentences(text: str) -> list[str]:
  """CoNLL-U text -> sentence blocks (comments + token lines), blank-line separated."""
  return [b.strip("\n") for b in re.split(r"\n\s*\n", text) if b.strip()]


def write_treebank(wheel_path: str, out_dir: str) -> dict[str, int]:
  """Writes `out_dir/{train,dev,test}.conllu` and README (it creates `out_dir`); returns counts."""
  sents = []
  for member in TREEBANK_FILES:
    sents += conllu_sentences(read_member(wheel_path, member).decode("utf-8"))
  os.makedirs(out_dir)
  counts = {}
  for name, idx in split_indices(len(sents)).items():
    with open(os.path.join(out_dir, f"{name}.conllu"), "w", encoding="utf-8") as f:
      f.writelines(sents[i] + "\n\n" for i in idx)
    counts[name] = len(idx)
  with open(os.path.join(out_dir, "README"), "w", encoding="utf-8") as f:
    f.write(TREEBANK_README.format(counts=counts, seed=SEED))
  return counts
