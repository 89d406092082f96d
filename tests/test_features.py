"""Featurisers with the real XLM-R tokenizer, checked by hand and against transformers."""

import random

import numpy as np
import pytest

from hyperx_jax.config import vocabulary
from hyperx_jax.data import features as F
from hyperx_jax.data.sources import read_source
from hyperx_jax.tokenizer import load_tokenizer

from assets_fixtures import turkish_treebank, xlmr_tokenizer_dir

IGN = vocabulary.IGNORE_INDEX


@pytest.fixture(scope="module")
def tok():
  return load_tokenizer(xlmr_tokenizer_dir())


def _check_fixed_shapes(out, s, pair=False):
  for k in ("input_ids", "attention_mask", "token_type_ids"):
    assert out[k].shape == (s,) and out[k].dtype == np.int32, k
  assert out["labels"].dtype == np.int32
  assert out["labels"].shape == (() if pair else (s,))
  assert not out["token_type_ids"].any()


def _pieces(tok, out):
  n = int(out["attention_mask"].sum())
  return tok.convert_ids_to_tokens(out["input_ids"][:n].tolist())


def _labelled(tok, out, names):
  """(piece, tag name) for every labelled position."""
  pieces = _pieces(tok, out)
  return [(pieces[i], names[l]) for i, l in enumerate(out["labels"].tolist()) if l != IGN]


# ---------------------------------------------------------------- pairs


def test_pair_by_hand(tok):
  f = F.PairFeaturizer(tok, 12)
  out = f({"premise": "Hello world!", "hypothesis": "Hello", "label": "contradiction"})
  _check_fixed_shapes(out, 12, pair=True)
  # "Hello world!" -> 35378 8999 38 (ASSETS.md); "Hello" -> 35378.
  assert out["input_ids"].tolist() == [0, 35378, 8999, 38, 2, 2, 35378, 2, 1, 1, 1, 1]
  assert out["attention_mask"].tolist() == [1] * 8 + [0] * 4
  assert int(out["labels"]) == 2
  assert int(f({"premise": "a", "hypothesis": "b", "label": 1})["labels"]) == 1


def test_pair_truncation_matches_transformers(tok):
  rng = random.Random(0)
  words = "the cat sat on a mat while dogs barked at night and morning came".split()
  f = F.PairFeaturizer(tok, 16)
  for _ in range(200):
    a = " ".join(rng.choices(words, k=rng.randint(1, 15)))
    b = " ".join(rng.choices(words, k=rng.randint(1, 15)))
    out = f({"premise": a, "hypothesis": b, "label": 0})
    ref = tok(a, b, truncation="longest_first", max_length=16, padding="max_length")
    assert out["input_ids"].tolist() == ref["input_ids"], (a, b)
    assert out["attention_mask"].tolist() == ref["attention_mask"]
  stats = f.stats()
  assert stats["examples"] == 200 and 0 < stats["truncated"] < 200


def test_pair_bad_label(tok):
  f = F.PairFeaturizer(tok, 16)
  with pytest.raises(ValueError, match=r"Unknown label 'maybe'.*'entailment', 'neutral'"):
    f({"premise": "a", "hypothesis": "b", "label": "maybe"})
  with pytest.raises(ValueError, match="label id 3 out of range"):
    f({"premise": "a", "hypothesis": "b", "label": 3})


def test_pairs_file(tok):
  f = F.PairFeaturizer(tok, 32)
  outs = [f(ex) for ex in read_source({"type": "jsonl", "path": "tests/data/pairs.jsonl"})]
  assert [int(o["labels"]) for o in outs] == [0, 2, 1]


# ---------------------------------------------------------------- token tags


def test_pos_turkish_hand_picked(tok):
  ex = read_source(
      {"type": "conllu", "path": turkish_treebank(), "tag_map": "google_universal_to_upos"}
  )[1]
  assert ex["tokens"][:4] == ["Açık", "la", "nma", "yan"]
  f = F.TokenFeaturizer(tok, 40, vocabulary.UPOS_TAGS)
  out = f(ex)
  _check_fixed_shapes(out, 40)
  assert _pieces(tok, out) == [
      "<s>",
      "▁Açık",
      "▁la",
      "▁n",
      "ma",
      "▁yan",
      "▁soruları",
      "n",
      "▁mü",
      "fred",
      "ata",
      "▁uygun",
      "▁ol",
      "▁up",
      "▁olma",
      "▁",
      "dığını",
      "▁bil",
      "▁",
      "mek",
      "▁imkan",
      "▁",
      "sız",
      "▁",
      ".",
      "</s>",
  ]
  # Each word's tag on its first piece with content; bare "▁" pieces carry none.
  assert _labelled(tok, out, vocabulary.UPOS_TAGS) == [
      ("▁Açık", "NOUN"),
      ("▁la", "VERB"),
      ("▁n", "VERB"),
      ("▁yan", "ADJ"),
      ("▁soruları", "NOUN"),
      ("▁mü", "NOUN"),
      ("▁uygun", "ADJ"),
      ("▁ol", "VERB"),
      ("▁up", "ADV"),
      ("▁olma", "VERB"),
      ("dığını", "NOUN"),
      ("▁bil", "VERB"),
      ("mek", "NOUN"),
      ("▁imkan", "NOUN"),
      ("sız", "VERB"),
      (".", "PUNCT"),
  ]
  assert out["labels"][26:].tolist() == [IGN] * 14
  assert f.stats() == {"examples": 1, "truncated": 0, "words_lost": 0, "skipped": 0}


def test_japanese_and_chinese_words_label_content_pieces(tok):
  f = F.TokenFeaturizer(tok, 16, vocabulary.NER_LABELS)
  ja = f({"tokens": ["東京", "に", "住んで", "います"], "tags": ["B-LOC", "O", "O", "O"]})
  assert _pieces(tok, ja) == [
      "<s>",
      "▁",
      "東京",
      "▁",
      "に",
      "▁",
      "住",
      "んで",
      "▁",
      "います",
      "</s>",
  ]
  assert _labelled(tok, ja, vocabulary.NER_LABELS) == [
      ("東京", "B-LOC"),
      ("に", "O"),
      ("住", "O"),
      ("います", "O"),
  ]
  zh = f({"tokens": ["我", "喜欢", "北京"], "tags": ["O", "O", "B-LOC"]})
  assert _labelled(tok, zh, vocabulary.NER_LABELS) == [
      ("▁我", "O"),
      ("喜欢", "O"),
      ("北京", "B-LOC"),
  ]


def test_ner_file_and_truncation_counts(tok):
  exs = read_source({"type": "iob2", "path": "tests/data/panx_en.iob2"})
  f = F.TokenFeaturizer(tok, 6, vocabulary.NER_LABELS)  # Room for 4 pieces.
  out = f(exs[0])  # John Smith lives in New York .
  assert _pieces(tok, out) == ["<s>", "▁John", "▁Smith", "▁lives", "▁in", "</s>"]
  assert _labelled(tok, out, vocabulary.NER_LABELS) == [
      ("▁John", "B-PER"),
      ("▁Smith", "I-PER"),
      ("▁lives", "O"),
      ("▁in", "O"),
  ]
  f(exs[1])
  assert f({"tokens": [], "tags": []}) is None
  assert f.stats() == {"examples": 3, "truncated": 1, "words_lost": 3, "skipped": 1}


def test_unknown_tag_points_to_tag_map(tok):
  f = F.TokenFeaturizer(tok, 16, vocabulary.UPOS_TAGS)
  with pytest.raises(ValueError, match=r"Unknown tag 'PRT'.*'ADJ', 'ADP'.*tag_map"):
    f({"tokens": ["da"], "tags": ["PRT"]})


# ---------------------------------------------------------------- MLM


def test_mlm_by_hand(tok):
  f = F.MLMFeaturizer(tok, 32)
  text = "The quick brown fox jumps over the lazy dog near the river bank today."
  original = [0, *tok(text, add_special_tokens=False)["input_ids"], 2]
  n = len(original) - 2
  out = f({"text": text}, np.random.default_rng(7))
  _check_fixed_shapes(out, 32)
  ids, labels = out["input_ids"].tolist(), out["labels"].tolist()
  chosen = [i for i, l in enumerate(labels) if l != IGN]
  assert len(chosen) == max(1, round(0.15 * n))
  assert 0 not in chosen and len(original) - 1 not in chosen
  assert all(labels[i] == original[i] for i in chosen)
  assert all(ids[i] == original[i] for i in range(len(original)) if i not in chosen)
  assert ids[len(original) :] == [1] * (32 - len(original))
  assert out["attention_mask"].tolist() == [1] * len(original) + [0] * (32 - len(original))
  # Same generator state -> same example; another seed -> another one.
  again = f({"text": text}, np.random.default_rng(7))
  assert all((out[k] == again[k]).all() for k in out)
  other = [f({"text": text}, s)["labels"].tolist() for s in range(5)]
  assert len({tuple(o) for o in other}) > 1


def test_mlm_count_at_least_one_and_under_cap(tok):
  f = F.MLMFeaturizer(tok, 40)
  assert f.max_predictions == 7  # ceil(0.15 * 40) + 1
  for n in range(1, 60):  # "word" x n -> n pieces, cut to 38.
    out = f({"text": " ".join(["word"] * n)}, n)
    kept = min(n, 38)
    assert int((out["labels"] != IGN).sum()) == max(1, round(0.15 * kept)) <= 7
  assert f.stats()["truncated"] == 59 - 38
  assert f({"text": "   "}, 0) is None and f.stats()["skipped"] == 1


def test_mlm_80_10_10(tok):
  f = F.MLMFeaturizer(tok, 128)
  text = " ".join(t["text"] for t in read_source({"type": "text", "path": "tests/data/text.txt"}))
  rng = np.random.default_rng(0)
  counts = {"mask": 0, "random": 0, "kept": 0}
  special = set(tok.all_special_ids)
  for _ in range(1000):
    out = f({"text": text}, rng)
    at = out["labels"] != IGN
    new, orig = out["input_ids"][at], out["labels"][at]
    counts["mask"] += int((new == tok.mask_token_id).sum())
    counts["kept"] += int((new == orig).sum())
    counts["random"] += int(((new != orig) & (new != tok.mask_token_id)).sum())
    assert not special & set(new[new != tok.mask_token_id].tolist())
  total = sum(counts.values())
  assert total == f.stats()["masked"] == 6000  # round(0.15 * 43 pieces) = 6 per text.
  # Binomial sd with n = 6000 is < 0.0052 (p=0.8) and < 0.0039 (p=0.1): 0.02 is > 3.8 sd.
  assert abs(counts["mask"] / total - 0.8) < 0.02
  assert abs(counts["random"] / total - 0.1) < 0.02
  # A random draw can hit the original id, but only with probability ~1/250k.
  assert abs(counts["kept"] / total - 0.1) < 0.02


def test_make_featurizer(tok):
  assert isinstance(F.make_featurizer("mlm", tok, 16), F.MLMFeaturizer)
  assert (
      F.make_featurizer("token_classification", tok, 16, vocabulary.NER_LABELS).labels
      == vocabulary.NER_LABELS
  )
  with pytest.raises(ValueError, match=r"Unknown task kind 'qa'.*pair_classification"):
    F.make_featurizer("qa", tok, 16)
