"""metrics.py against the seqeval package and hand-computed values."""

import warnings

import numpy as np
import pytest
from seqeval import metrics as seqeval_metrics

from hyperx_jax import metrics
from hyperx_jax.config import vocabulary

NER_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
UPOS = [
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
]


def _seqeval(gold, pred):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # undefined-metric and "not a NE tag" warnings
    return {
        "precision": seqeval_metrics.precision_score(gold, pred),
        "recall": seqeval_metrics.recall_score(gold, pred),
        "f1": seqeval_metrics.f1_score(gold, pred),
    }


def _assert_matches_seqeval(gold, pred):
  ours = metrics.entity_f1(gold, pred)
  theirs = _seqeval(gold, pred)
  for k in theirs:
    assert ours[k] == pytest.approx(theirs[k], abs=1e-12), (k, gold, pred, ours, theirs)


@pytest.mark.parametrize(
    "gold,pred",
    [
        # I- opens an entity after O (seqeval's lenient default mode).
        ([["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]]),
        ([["I-PER", "O"]], [["I-PER", "O"]]),
        # Type switch inside a chunk: two entities.
        ([["B-PER", "I-LOC", "O"]], [["B-PER", "I-PER", "O"]]),
        ([["B-PER", "I-PER", "I-ORG"]], [["B-PER", "I-PER", "B-ORG"]]),
        # Entity at the end of the sentence.
        ([["O", "O", "B-LOC"]], [["O", "O", "B-LOC"]]),
        ([["O", "B-LOC", "I-LOC"], ["B-ORG"]], [["O", "B-LOC", "O"], ["B-ORG"]]),
        # All-O (undefined precision and recall -> 0).
        ([["O", "O"]], [["O", "O"]]),
        ([["O", "O"]], [["B-PER", "O"]]),
        ([["B-PER", "O"]], [["O", "O"]]),
        # B B is two entities.
        ([["B-PER", "B-PER"]], [["B-PER", "I-PER"]]),
    ],
)
def test_entity_f1_hand_written_cases_match_seqeval(gold, pred):
  _assert_matches_seqeval(gold, pred)


def test_entity_f1_hand_computed_value():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
  # gold: PER(0-1) LOC(3) ORG; pred: PER(0-1) ORG(3) ORG LOC -> tp 2, pred 4, gold 3.
  out = metrics.entity_f1(gold, pred)
  assert out["precision"] == pytest.approx(0.5)
  assert out["recall"] == pytest.approx(2 / 3)
  assert out["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def _random_sentences(rng, tags, n, max_len):
  return [
      [tags[i] for i in rng.integers(0, len(tags), rng.integers(1, max_len + 1))] for _ in range(n)
  ]


def _corrupt(rng, sentences, tags, rate):
  return [
      [tags[rng.integers(len(tags))] if rng.random() < rate else t for t in s] for s in sentences
  ]


@pytest.mark.parametrize(
    "tags", [NER_TAGS, NER_TAGS + ["E-PER", "S-LOC"], UPOS + ["O", "B-X", "I-"]]
)
def test_entity_f1_random_sequences_match_seqeval(tags):
  rng = np.random.default_rng(0)
  for _ in range(150):
    gold = _random_sentences(rng, tags, int(rng.integers(1, 6)), 8)
    pred = _corrupt(rng, gold, tags, rate=float(rng.random()))
    _assert_matches_seqeval(gold, pred)


def test_pos_scores_match_seqeval_and_hand_accuracy():
  rng = np.random.default_rng(1)
  gold = _random_sentences(rng, UPOS, 40, 12)
  pred = _corrupt(rng, gold, UPOS, rate=0.3)
  out = metrics.pos_scores(gold, pred)
  flat = [(g, p) for gs, ps in zip(gold, pred) for g, p in zip(gs, ps)]
  assert out["accuracy"] == pytest.approx(sum(g == p for g, p in flat) / len(flat))
  assert out["f1"] == pytest.approx(_seqeval(gold, pred)["f1"])


def test_accuracy_hand_computed():
  assert metrics.accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == pytest.approx(0.75)
  assert metrics.accuracy(
      np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), np.array([1, 1, 1, 0])
  ) == pytest.approx(2 / 3)
  assert metrics.accuracy(np.array([1]), np.array([0]), np.array([0])) == 0.0
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.accuracy(np.zeros(3), np.zeros(4))


def test_to_tag_sentences_drops_ignored_positions_and_padding_examples():
  labels = np.array(
      [
          [-100, 1, 2, -100, 0, -100],
          [-100, 0, -100, -100, -100, -100],
          [-100, 3, -100, -100, -100, -100],
      ]
  )
  preds = np.array([[5, 1, 0, 6, 0, 0], [0, 3, 0, 0, 0, 0], [0, 3, 0, 0, 0, 0]])
  gold, pred = metrics.to_tag_sentences(preds, labels, NER_TAGS, example_mask=np.array([1, 1, 0]))
  assert gold == [["B-PER", "I-PER", "O"], ["O"]]
  assert pred == [["B-PER", "O", "O"], ["B-ORG"]]
  with pytest.raises(ValueError, match="outside the 7 label names"):
    metrics.to_tag_sentences(np.full([1, 2], 9), np.array([[0, 1]]), NER_TAGS)


def _pad_batches(rng, gold_ids, pred_ids, batch, seq):
  """Split sentences of ids into padded [B, S] batches with -100 gaps (non-first sub-words)."""
  for start in range(0, len(gold_ids), batch):
    labels = np.full([batch, seq], metrics.IGNORE_INDEX)
    preds = rng.integers(0, 7, [batch, seq])  # junk wherever the label is ignored
    mask = np.zeros([batch], int)
    for b, (g, p) in enumerate(
        zip(gold_ids[start : start + batch], pred_ids[start : start + batch])
    ):
      pos = np.sort(rng.choice(np.arange(1, seq), len(g), replace=False))
      labels[b, pos], preds[b, pos], mask[b] = g, p, 1
    yield preds, labels, mask


@pytest.mark.parametrize("metric", ["entity_f1", "pos"])
def test_accumulator_token_classification_with_padded_batches(metric):
  rng = np.random.default_rng(2)
  gold_ids = [rng.integers(0, 7, rng.integers(1, 9)) for _ in range(23)]
  pred_ids = [np.where(rng.random(len(g)) < 0.3, rng.integers(0, 7, len(g)), g) for g in gold_ids]
  acc = metrics.MetricAccumulator("token_classification", metric, NER_TAGS)
  for preds, labels, mask in _pad_batches(rng, gold_ids, pred_ids, batch=4, seq=12):
    logits = np.eye(7)[preds]  # [B, S, C]: the accumulator argmaxes logits
    acc.add(logits, labels, mask)
  gold = [[NER_TAGS[i] for i in g] for g in gold_ids]
  pred = [[NER_TAGS[i] for i in p] for p in pred_ids]
  expected = _seqeval(gold, pred)
  out = acc.result()
  if metric == "entity_f1":
    assert out == pytest.approx(expected)
  else:
    n_correct = sum(int((g == p).sum()) for g, p in zip(gold_ids, pred_ids))
    assert out == pytest.approx(
        {"accuracy": n_correct / sum(map(len, gold_ids)), "f1": expected["f1"]}
    )


def test_accumulator_pair_classification_and_loss():
  acc = metrics.MetricAccumulator("pair_classification")
  acc.add(np.array([0, 1, 2, 0]), np.array([0, 1, 1, 2]), np.array([1, 1, 1, 0]), loss=1.0)
  acc.add(np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), np.array([1, 2]), loss=4.0)
  # correct: 0,1 of 3 counted, then 1 of 2 -> 3/5; loss weighted by examples: (3*1 + 2*4)/5.
  assert acc.result() == pytest.approx({"accuracy": 3 / 5, "loss": 11 / 5})
  assert acc.num_examples == 5


def test_accumulator_mlm_counts_only_masked_tokens():
  acc = metrics.MetricAccumulator("mlm")
  labels = np.array([[-100, 5, -100, 7], [-100, -100, 9, -100], [3, 3, 3, 3]])
  preds = np.array([[1, 5, 2, 8], [0, 0, 9, 0], [3, 3, 3, 3]])
  acc.add(preds, labels, np.array([1, 1, 0]))
  assert acc.result() == pytest.approx({"accuracy": 2 / 3})


def test_accumulator_rejects_bad_configuration():
  with pytest.raises(ValueError, match="known kinds"):
    metrics.MetricAccumulator("tagging")
  with pytest.raises(ValueError, match="entity_f1"):
    metrics.MetricAccumulator("token_classification", "f1", NER_TAGS)
  with pytest.raises(ValueError, match="example_mask"):
    metrics.MetricAccumulator("mlm").add(np.zeros([2, 3]), np.zeros([2, 3]), np.ones([3]))


@pytest.mark.parametrize(
    "kind, metric",
    [
        ("token_classification", "entity_f1"),
        ("token_classification", "pos"),
        ("pair_classification", "accuracy"),
        ("mlm", "mlm_accuracy"),
    ],
)
def test_metric_names_are_what_evaluation_reports(kind, metric):
  labels = ["O", "B-PER", "I-PER"]
  acc = metrics.MetricAccumulator(kind, metric, labels)
  shape = (2, 4) if kind != "pair_classification" else (2,)
  acc.add(np.ones(shape, np.int32), np.ones(shape, np.int32))
  assert tuple(sorted(acc.result())) == tuple(sorted(vocabulary.metric_names(kind, metric)))
