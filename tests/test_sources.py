"""Source readers on small files in the real formats, the Turkish treebank, .mo and TFDS."""

import collections
import os
import zipfile
from pathlib import Path

import conllu
import pytest

from hyperx_jax.config.vocabulary import UPOS_TAGS
from hyperx_jax.data import sources
from hyperx_jax.data.features import PairFeaturizer, TokenFeaturizer
from hyperx_jax.data.sources import SourceError, read_source
from hyperx_jax.tokenizer import load_tokenizer

from assets_fixtures import turkish_treebank, xlmr_tokenizer_dir

DATA = Path(__file__).parent / "data"


def bare(examples):
  """The examples without their `where` and `lines` (compared separately)."""
  return [
      {k: v for k, v in ex.items() if k not in (sources.WHERE, sources.LINES)} for ex in examples
  ]


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer(xlmr_tokenizer_dir())


def test_conllu_skips_ranges_and_empty_nodes():
  ex = read_source({"type": "conllu", "path": DATA / "mwt.conllu"})
  assert [e["where"] for e in ex] == [f"{DATA / 'mwt.conllu'}:4", f"{DATA / 'mwt.conllu'}:14"]
  assert [e["lines"] for e in ex] == [[4, 5, 7, 8, 9, 10], [14, 15, 16, 17, 18, 20]]
  assert bare(ex) == [
      {
          "tokens": ["Vamos", "nos", "a", "el", "mar", "."],
          "tags": ["VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT"],
      },
      {
          "tokens": ["Sue", "likes", "coffee", "and", "Bill", "tea"],
          "tags": ["PROPN", "VERB", "NOUN", "CCONJ", "PROPN", "NOUN"],
      },
  ]


def test_turkish_treebank_matches_conllu_package():
  path = turkish_treebank()
  ex = read_source({"type": "conllu", "path": path, "tag_map": "google_universal_to_upos"})
  with open(path, encoding="utf-8") as f:
    reference = [[t for t in s if isinstance(t["id"], int)] for s in conllu.parse_incr(f)]
  assert len(ex) == len(reference) == 2541
  assert [e["tokens"] for e in ex] == [[t["form"] for t in s] for s in reference]
  mapped = {"CONJ": "CCONJ", "PRT": "PART", "ONOM": "INTJ", "AFFIX": "X"}
  assert [e["tags"] for e in ex] == [
      [mapped.get(t["upos"], t["upos"]) for t in s] for s in reference
  ]
  assert bare(ex)[0] == {
      "tokens": ["Burda", "da", "öylemi", "yoksa", "kiloyla", "mı", "?"],
      "tags": ["PRON", "PART", "VERB", "CCONJ", "VERB", "PART", "PUNCT"],
  }
  assert set(t for e in ex for t in e["tags"]) <= set(UPOS_TAGS)


@pytest.mark.parametrize(
    "bad, expect",
    [
        ("3\tsaw\tsee\tVERB\t_\t_\t0\troot\t_", "10 tab-separated columns (found 9)"),
        ("x\tsaw\tsee\tVERB\t_\t_\t0\troot\t_\t_", "integer word ID"),
        ("3-x\tsaw\tsee\tVERB\t_\t_\t0\troot\t_\t_", "an ID like"),
    ],
)
def test_conllu_malformed_line(tmp_path, bad, expect):
  lines = (DATA / "mwt.conllu").read_text(encoding="utf-8").splitlines()
  lines.insert(13, bad)  # Inside the second sentence: becomes line 14.
  path = tmp_path / "bad.conllu"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(SourceError) as e:
    read_source({"type": "conllu", "path": path})
  assert f"{path}:14:" in str(e.value) and expect in str(e.value) and repr(bad) in str(e.value)


def test_iob2_panx_prefix_and_plain():
  panx = read_source({"type": "iob2", "path": DATA / "panx_en.iob2"})
  assert bare(panx) == [
      {
          "tokens": ["John", "Smith", "lives", "in", "New", "York", "."],
          "tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"],
      },
      {"tokens": ["Google", "hired", "Ana"], "tags": ["B-ORG", "O", "B-PER"]},
  ]
  plain = read_source({"type": "iob2", "path": DATA / "ner.iob2", "max_examples": 1})
  assert bare(plain) == [
      {
          "tokens": ["Ankara", "Büyükşehir", "Belediyesi", "çalışıyor"],
          "tags": ["B-LOC", "I-LOC", "I-LOC", "O"],
      }
  ]


def test_iob2_prefix_only_when_whole_sentence_has_it():
  ex = read_source({"type": "iob2", "path": DATA / "prefix_ambiguity.iob2"})
  assert [e["tokens"] for e in ex] == [["re:publica", "2024"], ["re:publica", "begann"]]


def test_iob2_bad_line(tmp_path):
  path = tmp_path / "x.iob2"
  path.write_text("a\tO\n\nb c d\n", encoding="utf-8")
  with pytest.raises(SourceError, match=rf"{path}:3: expected two columns.*'b c d'"):
    read_source({"type": "iob2", "path": path})


def test_jsonl_pairs_and_text():
  pairs = read_source({"type": "jsonl", "path": DATA / "pairs.jsonl"})
  assert [p["label"] for p in pairs] == ["entailment", 2, "neutral"]
  assert pairs[2]["premise"] == "Bir kadın kitap okuyor."
  text = read_source({"type": "text", "path": DATA / "text.txt"})
  assert len(text) == 3 and bare(text)[1] == {
      "text": "Le renard brun saute par-dessus le chien paresseux."
  }


def test_jsonl_bad_rows(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "a"}\n')
  with pytest.raises(SourceError, match=rf"{path}:2: expected an object with keys"):
    read_source({"type": "jsonl", "path": path})
  path.write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n{oops\n')
  with pytest.raises(SourceError, match=rf"{path}:2: expected a JSON object"):
    read_source({"type": "jsonl", "path": path})


def test_empty_missing_unknown(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n  \n")
  with pytest.raises(SourceError, match="empty.txt: file is empty"):
    read_source({"type": "text", "path": empty})
  with pytest.raises(SourceError, match="nope.conllu: no such file"):
    read_source({"type": "conllu", "path": tmp_path / "nope.conllu"})
  with pytest.raises(SourceError, match=r"Unknown source type 'csv'.*'conllu', 'iob2'"):
    read_source({"type": "csv", "path": empty})
  with pytest.raises(SourceError, match=r"of type 'mo' needs a 'lang'"):
    read_source({"type": "mo"})
  with pytest.raises(SourceError, match=r"Unknown tag_map 'x'.*google_universal_to_upos"):
    read_source({"type": "iob2", "path": DATA / "ner.iob2", "tag_map": "x"})


def test_tag_map_dict():
  ex = read_source({"type": "iob2", "path": DATA / "panx_en.iob2", "tag_map": {"B-PER": "B-X"}})
  assert ex[1]["tags"] == ["B-ORG", "O", "B-X"]


def _locales_with_mo():
  d = sources.LOCALE_DIR
  if not os.path.isdir(d):
    return []
  return [
      l
      for l in ("fr", "tr", "de", "es", "ja")
      if os.path.isdir(os.path.join(d, l, "LC_MESSAGES"))
      and any(f.endswith(".mo") for f in os.listdir(os.path.join(d, l, "LC_MESSAGES")))
  ]


def test_mo_sentences_and_parallel():
  langs = _locales_with_mo()
  if not langs:
    pytest.skip(f"no .mo catalogues under {sources.LOCALE_DIR}")
  lang = langs[0]
  texts = sources.mo_sentences(lang)
  assert texts and all(len(t) > 20 for t in texts)
  assert len(set(texts)) == len(texts)
  assert sources.mo_sentences(lang, limit=5) == texts[:5]
  assert bare(read_source({"type": "mo", "lang": lang, "limit": 3})) == [
      {"text": t} for t in texts[:3]
  ]
  pairs = sources.mo_parallel(lang)
  assert pairs and all(e != t and len(e) > 20 and len(t) > 20 for e, t in pairs)
  assert {t for _, t in pairs} <= set(texts)
  with pytest.raises(SourceError, match=r"No \.mo catalogues for locale 'xx_NOPE'.*locales"):
    sources.mo_sentences("xx_NOPE")


def test_ud_treebank_table_is_known_to_tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  configs = {c.name for c in tfds.builder_cls("universal_dependencies").BUILDER_CONFIGS}
  needed = "en ar zh tr kk ta yue br is tl yo fo ug mt sa hsb gn".split()
  assert set(needed) <= set(sources.UD_TREEBANKS)
  unknown = {l: t for l, t in sources.UD_TREEBANKS.items() if t not in configs}
  assert not unknown, unknown


def _write_ud_manual_dir(manual: Path) -> dict[str, list[dict]]:
  """First 30 Turkish sentences, tags mapped to UPOS, as tr_imst's three release files."""
  to_upos = sources.resolve_tag_map("google_universal_to_upos")
  blocks = turkish_treebank().read_text(encoding="utf-8").strip().split("\n\n")[:30]
  expected = {}
  for split, part in (("train", blocks[:20]), ("dev", blocks[20:25]), ("test", blocks[25:])):
    rows = []
    for block in part:
      for line in block.splitlines():
        cols = line.split("\t")
        if len(cols) == 10:
          cols[3] = to_upos(cols[3])
        rows.append("\t".join(cols))
      rows.append("")
    path = manual / f"tr_imst-ud-{split}.conllu"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    expected[split] = sources.read_conllu(path)
  return expected


def _key(ex):
  return tuple(ex["tokens"]), tuple(ex["tags"])


def test_tfds_universal_dependencies_offline(tmp_path, tok):
  manual, data_dir = tmp_path / "manual", tmp_path / "tfds"
  manual.mkdir()
  expected = _write_ud_manual_dir(manual)
  name = "universal_dependencies/tr_imst"

  # Local files differ from the registered release: the checksum check must fire...
  with pytest.raises(SourceError, match="wrong checksum"):
    sources.read_tfds(name, "train", str(data_dir), str(manual), trust_local_files=False)
  # ...unless the local files are trusted.
  got = {
      split: read_source(
          {
              "type": "tfds",
              "name": name,
              "split": split,
              "data_dir": str(data_dir),
              "manual_dir": str(manual),
          }
      )
      for split in ("train", "dev", "test")
  }
  for split in got:  # TFDS shuffles on write: compare as multisets.
    assert collections.Counter(map(_key, got[split])) == collections.Counter(
        map(_key, expected[split])
    ), split
  assert list((data_dir / name / "1.0.1").glob("*.array_record-*"))
  with pytest.raises(SourceError, match=r"no split 'validation'.*'dev', 'test', 'train'"):
    sources.read_tfds(name, "validation", str(data_dir))

  featurizer = TokenFeaturizer(tok, 64, UPOS_TAGS)
  features = [featurizer(ex) for ex in got["train"]]
  n_words = sum(len(ex["tokens"]) for ex in got["train"])
  labelled = sum(int((f["labels"] != -100).sum()) for f in features)
  assert labelled + featurizer.stats()["words_lost"] == n_words


XNLI_COLUMNS = (
    "language",
    "gold_label",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "promptID",
    "pairID",
    "genre",
)


def _write_xnli_zip(manual: Path) -> None:
  """XNLI-1.0.zip as released: XNLI-1.0/xnli.{dev,test}.tsv, one row per (pair, language)."""
  from tensorflow_datasets.text import xnli  # pylint: disable=g-import-not-at-top

  with zipfile.ZipFile(manual / "XNLI-1.0.zip", "w") as z:
    for split in ("dev", "test"):
      rows = ["\t".join(XNLI_COLUMNS)]
      for i, label in enumerate(("entailment", "contradiction", "neutral")):
        for lang in xnli._LANGUAGES:  # pylint: disable=protected-access
          rows.append(
              "\t".join(
                  (
                      lang,
                      label,
                      "",
                      "",
                      "",
                      "",
                      f"{split} {i} premise {lang}",
                      f"{split} {i} hypothesis {lang}",
                      str(i),
                      f"{split}{i}",
                      "fiction",
                  )
              )
          )
      z.writestr(f"XNLI-1.0/xnli.{split}.tsv", "\n".join(rows) + "\n")


def test_tfds_xnli_offline_without_tensorflow(tmp_path, tok):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_xnli_zip(manual)
  source = {
      "type": "tfds",
      "name": "xnli",
      "split": "validation",
      "lang": "tr",
      "data_dir": str(tmp_path / "tfds"),
      "manual_dir": str(manual),
  }
  got = sorted(bare(read_source(source)), key=lambda ex: ex["premise"])
  assert got == [
      {"premise": f"dev {i} premise tr", "hypothesis": f"dev {i} hypothesis tr", "label": label}
      for i, label in enumerate(("entailment", "contradiction", "neutral"))
  ]
  with pytest.raises(SourceError, match=r"needs a 'lang' among \['ar', 'bg'"):
    read_source({**source, "lang": "xx"})
  featurizer = PairFeaturizer(tok, 32)
  assert [int(featurizer(ex)["labels"]) for ex in got] == [0, 2, 1]


def test_tfds_multi_nli_records_convert_with_the_builders_label_names():
  """XNLI trains on MultiNLI; its records are converted with the builder's own label names."""
  builder = sources.tfds._tfds().builder("multi_nli")  # metadata only: works offline
  convert = sources.tfds._tfds_converter("multi_nli", builder, None)
  record = {"premise": b"A man plays.", "hypothesis": "Nobody plays.", "label": 2}
  assert convert(record) == {
      "premise": "A man plays.",
      "hypothesis": "Nobody plays.",
      "label": "contradiction",
  }
  with pytest.raises(SourceError, match="multi_nli"):
    sources.tfds._tfds_converter("glue/mnli", builder, None)
