"""packing_bench's counts: one packed epoch by hand, and masked-LM text masked by the
pipeline's featuriser (a seed per line), so its MLM rows carry the masked positions a packed
row must make room for."""

import numpy as np
import pytest

from hyperx_jax.benchmarks import packing_bench
from hyperx_jax.config.vocabulary import IGNORE_INDEX, MLM
from hyperx_jax.data import features
from hyperx_jax.tokenizer import load_tokenizer

from assets_fixtures import xlmr_tokenizer_dir

TEXT = [
    {"text": t}
    for t in (
        "Dosya kaydedilemedi.",
        "Ayarlar penceresini aç",
        "Bu işlem geri alınamaz, devam etmek istiyor musunuz?",
    )
]


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(xlmr_tokenizer_dir())


def _tokens(n: int) -> features.Features:
  """A pair example of `n` real tokens (ids are irrelevant to the packer)."""
  ids = np.full([16], 1, np.int32)
  ids[:n] = 5
  return {
      "input_ids": ids,
      "attention_mask": (np.arange(16) < n).astype(np.int32),
      "labels": np.int32(0),
  }


def test_pack_epoch_by_hand():
  """Rows of 16 tokens, 2 rows, at most 3 sentences a batch, first fit in order:
  [10, 6 | 9] -> 3 taken; [7, 8 | 12] -> 3; [5, 10 | 6] wraps into the next epoch -> 3."""
  examples = [_tokens(n) for n in (10, 6, 9, 7, 8, 12, 5)]
  packer = features.Packer(16, 4, pad_id=1)
  taken = packing_bench.pack_epoch(examples, packer, batch_size=3, rows=2)
  np.testing.assert_array_equal(taken, [3, 3, 3])
  # One row: [10, 6] then 9 fits nowhere -> 2; [9, 7] -> 2; [8] + 12 > 16 -> 1; [12] -> 1 ...
  one_row = packing_bench.pack_epoch(examples, packer, batch_size=3, rows=1)
  np.testing.assert_array_equal(one_row, [2, 2, 1, 1, 2])


def test_mlm_text_is_masked_with_a_seed_per_example(tokenizer):
  first = packing_bench.featurised(MLM, (), TEXT, tokenizer, 32)
  again = packing_bench.featurised(MLM, (), TEXT, tokenizer, 32)
  examples, tokens, _ = first
  assert len(examples) == len(TEXT)
  for example, same, seed, n in zip(examples, again[0], range(len(TEXT)), tokens):
    masked = example["labels"] != IGNORE_INDEX
    assert 1 <= masked.sum() < n  # some pieces masked, never <s> or </s>
    np.testing.assert_array_equal(example["input_ids"], same["input_ids"])
    alone = features.make_featurizer(MLM, tokenizer, 32)(TEXT[seed], seed)
    np.testing.assert_array_equal(example["labels"], alone["labels"])


def test_a_language_without_pairs_is_refused_before_anything_is_read(capsys):
  with pytest.raises(SystemExit):
    packing_bench.main(["--lang", "zz", "--skip_time"])
  err = capsys.readouterr().err
  assert "--lang zz: no gettext pairs under" in err and "prepared: " in err
