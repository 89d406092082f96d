"""The tokenizer loader against the `tokenizers` library and XLM-R's known ids."""

from pathlib import Path

import pytest
import tokenizers

from hyperx_jax.tokenizer import load_tokenizer

from assets_fixtures import xlmr_tokenizer_dir

SENTENCES = [
    "Hello world!",
    "Kürtaj ve komplikasyonları",
    "東京に住んでいます",
    "Двадцать два года",
    "لا أعرف",
    "  spaced   out  ",
]


@pytest.fixture(scope="module")
def tok_dir():
  return xlmr_tokenizer_dir()


@pytest.fixture(scope="module")
def tok(tok_dir):
  return load_tokenizer(tok_dir)


def test_xlmr_special_ids(tok):
  assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  assert tok.bos_token_id == 0 and tok.eos_token_id == 2
  assert tok.mask_token_id == 250001 and len(tok) == 250002
  assert sorted(tok.all_special_ids) == [0, 1, 2, 3, 250001]


def test_known_encoding(tok):
  assert tok("Hello world!")["input_ids"] == [0, 35378, 8999, 38, 2]  # ASSETS.md.


def test_matches_tokenizers_library(tok, tok_dir):
  raw = tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
  for s in SENTENCES:
    assert tok(s)["input_ids"] == raw.encode(s).ids, s
  assert tok("A b", "C")["input_ids"] == raw.encode("A b", "C").ids == [0, 62, 876, 2, 2, 313, 2]


def test_dir_without_tokenizer_files(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"tokenizer\.json.*sentencepiece\.bpe\.model"):
    load_tokenizer(tmp_path)


def test_missing_name_lists_what_was_looked_for(tmp_path):
  with pytest.raises(OSError, match=r"looked for .*no_such_dir.*tokenizer\.json"):
    load_tokenizer(str(tmp_path / "no_such_dir"))


def test_sentencepiece_model_dir(tmp_path):
  spm = pytest.importorskip("sentencepiece")
  lines = (Path(__file__).parent / "data" / "text.txt").read_text(encoding="utf-8").split("\n")
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines * 20),
      model_prefix=str(tmp_path / "sentencepiece.bpe"),
      vocab_size=60,
      hard_vocab_limit=False,
      minloglevel=2,
  )
  tok = load_tokenizer(tmp_path)
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sentencepiece.bpe.model"))
  text = "The lazy dog jumps"
  # fairseq's dictionary puts <s> <pad> </s> <unk> first: piece ids shift by one.
  assert tok(text)["input_ids"] == [0, *[i + 1 for i in sp.encode(text)], 2]
  assert (tok.pad_token_id, tok.mask_token_id) == (1, sp.get_piece_size() + 1)
