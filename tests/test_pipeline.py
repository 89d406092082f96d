"""Training and eval pipelines on real data (Turkish treebank, XLM-R tokenizer, test files)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hyperx_jax.config import ConfigError, common, decode, environment, vocabulary
from hyperx_jax.data import features, mixture, pipeline, sources
from hyperx_jax.tokenizer import load_tokenizer

from assets_fixtures import turkish_treebank, xlmr_tokenizer_dir

DATA = Path(__file__).parent / "data"
POS_CAP = 40


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(xlmr_tokenizer_dir())


def _config(**data):
  c = common.get_config()
  c.seed = 11
  c.data.max_length = 32
  c.data.batch_size = 4
  c.data.update(data)
  c.tasks.pos = {"kind": "token_classification", "labels": list(common.UPOS_TAGS)}
  c.tasks.xnli = {"kind": "pair_classification", "labels": list(common.XNLI_LABELS)}
  c.tasks.mlm = {"kind": "mlm", "labels": []}
  c.tasks.ner = {"kind": "token_classification", "labels": list(common.NER_LABELS)}
  c.languages = ["en", "tr"]
  treebank = {
      "type": "conllu",
      "path": str(turkish_treebank()),
      "tag_map": "google_universal_to_upos",
  }
  c.train_streams = [
      common.stream("pos", "tr", treebank, max_examples=POS_CAP),
      common.stream("xnli", "en", {"type": "jsonl", "path": str(DATA / "pairs.jsonl")}),
      common.stream("mlm", "tr", {"type": "text", "path": str(DATA / "text.txt")}),
  ]
  c.eval_streams = [
      common.stream("pos", "tr", treebank, max_examples=13),
      common.stream("ner", "tr", {"type": "iob2", "path": str(DATA / "ner.iob2")}),
      common.stream("xnli", "en", {"type": "jsonl", "path": str(DATA / "pairs.jsonl")}),
  ]
  return c


def _train_pipeline(c, tokenizer, **kwargs):
  spec = decode(c)
  return pipeline.build_train_pipeline(
      spec.train_streams, spec.data, spec.seed, tokenizer, **kwargs
  )


def _eval_datasets(c, tokenizer):
  spec = decode(c)
  return pipeline.build_eval_datasets(
      spec.eval_streams, spec.train_streams, spec.data, spec.seed, tokenizer
  )


def _assert_batches_equal(got, want):
  assert [(b.task, b.lang, b.step) for b in got] == [(b.task, b.lang, b.step) for b in want]
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for k in g:
      np.testing.assert_array_equal(g[k], w[k], err_msg=f"{g.task} {k}")


def test_batches_have_contract_shapes_and_ids(tokenizer):
  it = _train_pipeline(_config(), tokenizer, process_index=0, process_count=1)
  seen = set()
  for step in range(30):
    a = next(it)  # a dict of arrays that also knows its stream
    seen.add(a.task)
    assert isinstance(a, dict) and a.step == step
    assert a["input_ids"].shape == a["attention_mask"].shape == (4, 32)
    assert all(a[k].dtype == np.int32 for k in a)
    assert a["labels"].shape == ((4,) if a.kind == "pair_classification" else (4, 32))
    # Ids are positions in config.tasks / config.languages (ConfigDict keys come sorted).
    np.testing.assert_array_equal(a["task_id"], ["mlm", "ner", "pos", "xnli"].index(a.task))
    np.testing.assert_array_equal(a["lang_id"], ["en", "tr"].index(a.lang))
    np.testing.assert_array_equal(a["example_mask"], 1)
    if a.kind == "mlm":  # masked positions carry the original id, the input is corrupted
      assert (a["labels"] != vocabulary.IGNORE_INDEX).any()
      assert (a["input_ids"] != np.where(a["labels"] >= 0, a["labels"], a["input_ids"])).any()
  assert seen == {"pos", "xnli", "mlm"}
  counts = it.stats()
  assert set(counts) == {("pos", "tr"), ("xnli", "en"), ("mlm", "tr")}
  assert sum(c["examples"] for c in counts.values()) == 30 * 4
  assert all({"truncated", "words_lost", "skipped"} <= set(c) for c in counts.values())


def test_pair_rows_match_featurizer(tokenizer):
  c = _config(weights=[0, 1, 0], batch_size=3)
  raw = sources.read_jsonl_pairs(DATA / "pairs.jsonl")
  direct = features.PairFeaturizer(tokenizer, 32, common.XNLI_LABELS)
  want = sorted(direct(ex)["input_ids"].tolist() for ex in raw)
  b = next(_train_pipeline(c, tokenizer))
  assert (b.task, b.lang) == ("xnli", "en")
  assert sorted(b["input_ids"].tolist()) == want  # one epoch = each example once


def test_rates_follow_capped_sizes(tokenizer):
  it = _train_pipeline(_config(temperature=2.0), tokenizer)
  # sizes after the few-shot cap: pos 40, xnli 3, mlm 3; T = 2 -> sqrt of the sizes.
  want = np.sqrt([40, 3, 3]) / np.sqrt([40, 3, 3]).sum()
  np.testing.assert_allclose(list(it.rates.values()), want)
  assert list(it.rates) == [("pos", "tr"), ("xnli", "en"), ("mlm", "tr")]
  pos_rows = {
      tuple(r)
      for ex in sources.read_source(
          {"type": "conllu", "path": str(turkish_treebank()), "tag_map": "google_universal_to_upos"}
      )[:POS_CAP]
      for r in [features.TokenFeaturizer(tokenizer, 32, common.UPOS_TAGS)(ex)["input_ids"]]
  }
  for _ in range(20):
    b = next(it)
    if b.task == "pos":
      assert {tuple(r) for r in b["input_ids"]} <= pos_rows  # only the first 40


def test_resume_from_json_state_is_exact(tokenizer):
  reference = _train_pipeline(_config(), tokenizer)
  want = [next(reference) for _ in range(24)]
  run = _train_pipeline(_config(), tokenizer)
  for _ in range(9):
    next(run)
  state = json.loads(json.dumps(run.get_state()))
  restored = _train_pipeline(_config(), tokenizer)
  restored.set_state(state)
  got = [next(restored) for _ in range(15)]
  _assert_batches_equal(got, want[9:])
  # MLM (3 examples, batch 4: every batch crosses an epoch) is among the resumed batches.
  assert "mlm" in {b.task for b in got}
  assert restored.get_state() == reference.get_state()


def test_host_slices_concatenate_to_global_batch(tokenizer):
  whole = _train_pipeline(_config(), tokenizer)
  hosts = [
      _train_pipeline(_config(), tokenizer, process_index=p, process_count=2) for p in range(2)
  ]
  for _ in range(12):
    w = next(whole)
    parts = [next(h) for h in hosts]
    assert {(p.task, p.lang) for p in parts} == {(w.task, w.lang)}
    for k, v in w.items():
      assert parts[0][k].shape[0] == 2
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), v)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_yields_every_example_once(tokenizer, process_count):
  evals = _eval_datasets(_config(), tokenizer)
  assert {p: d.zero_shot for p, d in evals.items()} == {
      ("pos", "tr"): False,
      ("ner", "tr"): True,
      ("xnli", "en"): False,
  }
  pos = evals["pos", "tr"]
  assert len(pos) == 13
  raw = sources.read_source(pos.spec.source)[:13]
  direct = features.TokenFeaturizer(tokenizer, 32, common.UPOS_TAGS)
  hosts = [list(pos.batches(4, p, process_count)) for p in range(process_count)]
  # Global batch i = concatenation of the hosts' batch i.
  merged = [
      mixture.stack_examples(
          [{k: v[j] for k, v in b.items()} for b in step for j in range(len(b["input_ids"]))]
      )
      for step in zip(*hosts)
  ]
  assert len(merged) == 4  # ceil(13 / 4)
  for b in merged:
    assert b["input_ids"].shape == (4, 32) and b["labels"].shape == (4, 32)
  mask = np.concatenate([b["example_mask"] for b in merged])
  np.testing.assert_array_equal(mask, [1] * 13 + [0] * 3)
  ids = np.concatenate([b["input_ids"] for b in merged])
  labels = np.concatenate([b["labels"] for b in merged])
  for i, ex in enumerate(raw):
    f = direct(ex)
    np.testing.assert_array_equal(ids[i], f["input_ids"])
    np.testing.assert_array_equal(labels[i], f["labels"])
  assert (labels[13:] == vocabulary.IGNORE_INDEX).all()
  assert (ids[13:] == tokenizer.pad_token_id).all()
  # Iterating gives this process's batches of config.data.eval_batch_size (64 -> one batch).
  (only,) = list(pos)
  np.testing.assert_array_equal(only["example_mask"], [1] * 13 + [0] * 51)
  np.testing.assert_array_equal(only["input_ids"][:13], ids[:13])


def test_make_global_batch_on_8_devices():
  devices = np.array(jax.devices())
  assert devices.size == 8
  sharding = NamedSharding(
      Mesh(devices.reshape(4, 2), ("data", "fsdp")), PartitionSpec(("data", "fsdp"))
  )
  local = {
      "input_ids": np.arange(16 * 6, dtype=np.int32).reshape(16, 6),
      "labels": np.arange(16, dtype=np.int32),
  }
  batch = pipeline.make_global_batch(local, sharding)
  for k, v in local.items():
    assert batch[k].shape == v.shape and batch[k].sharding == sharding
    np.testing.assert_array_equal(np.asarray(batch[k]), v)
    shards = sorted(batch[k].addressable_shards, key=lambda s: s.index[0].start)
    assert len(shards) == 8
    for i, s in enumerate(shards):
      np.testing.assert_array_equal(np.asarray(s.data), v[2 * i : 2 * i + 2])


def test_bad_streams_name_the_known_ones(tokenizer):
  c = _config()
  c.eval_streams.append({"task": "pos", "lang": "en", "source": None, "max_examples": None})
  with pytest.raises(ConfigError, match=r"eval_streams\[3\].source: expected a mapping"):
    environment.parse(c, 1)
  c = _config()
  c.train_streams[1]["task"] = "nli"
  with pytest.raises(ConfigError, match=r"train_streams\[1\].task: unknown task 'nli'.*'xnli'"):
    environment.parse(c, 1)
  c = _config()
  c.train_streams[0]["lang"] = "fr"
  with pytest.raises(ConfigError, match=r"'fr' is not in config.languages"):
    environment.parse(c, 1)
  c = _config()
  c.train_streams.append(c.train_streams[0])
  with pytest.raises(ConfigError, match=r"appear more than once: \[\('pos', 'tr'\)\]"):
    environment.parse(c, 1)
  evals = _eval_datasets(_config(), tokenizer)
  with pytest.raises(KeyError, match=r"no eval stream for \('pos', 'en'\).*known pairs"):
    evals["pos", "en"]  # pylint: disable=pointless-statement


def test_prefetch_yields_the_same_batches_and_state(tokenizer):
  plain = _train_pipeline(_config(), tokenizer)
  want = [next(plain) for _ in range(14)]
  ahead = _train_pipeline(_config(prefetch=3), tokenizer)
  got = [next(ahead) for _ in range(6)]
  state = ahead.get_state()  # the worker is ahead; the state follows the consumer
  assert state["step"] == 6
  assert ahead.realized_shares() == pytest.approx(
      {p: sum(b.task == p[0] for b in want[:6]) / 6 for p in ahead.rates}
  )
  restored = _train_pipeline(_config(prefetch=2), tokenizer)
  restored.set_state(json.loads(json.dumps(state)))
  got += [next(ahead) for _ in range(4)]
  ahead.set_state(state)  # rewinding a running prefetcher
  _assert_batches_equal(got, want[:10])
  _assert_batches_equal([next(restored) for _ in range(8)], want[6:])
  _assert_batches_equal([next(ahead) for _ in range(8)], want[6:])
  ahead.close()
  restored.close()


# ------------------------------------------------------------------------------- packing


def _segments(batch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """Every sentence of a packed batch as (its token ids, its token labels or pair label)."""
  out = []
  for r, seg in enumerate(batch["segment_ids"]):
    for k in range(1, seg.max() + 1):
      at = np.flatnonzero(seg == k)
      assert (np.diff(at) == 1).all()  # contiguous
      labels = (
          batch["labels"][r, k - 1 : k]
          if batch["labels"].shape[1] != seg.size
          else batch["labels"][r, at]
      )
      out.append((tuple(batch["input_ids"][r, at]), tuple(labels)))
  return out


def _unpacked_examples(batch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """Every row of an unpacked batch as `_segments` gives a packed one."""
  out = []
  for r, mask in enumerate(batch["attention_mask"]):
    at = np.flatnonzero(mask)
    labels = batch["labels"][r : r + 1] if batch["labels"].ndim == 1 else batch["labels"][r, at]
    out.append((tuple(batch["input_ids"][r, at]), tuple(labels)))
  return out


def _packed(**data):
  """Up to 16 sentences a batch in 4 rows of length 32 (too few: batches fall short)."""
  return _config(**{"packing": 4, "batch_size": 16, "packed_rows": 4, **data})


@pytest.mark.parametrize(
    "weights,kind",
    [([1, 0, 0], "token_classification"), ([0, 1, 0], "pair_classification"), ([0, 0, 1], "mlm")],
)
def test_packed_rows_hold_the_stream_in_order(tokenizer, weights, kind):
  packed = _train_pipeline(_packed(weights=weights, packing=3), tokenizer)
  one_by_one = _train_pipeline(_config(weights=weights, batch_size=1), tokenizer)
  k_mlm = vocabulary.max_mlm_predictions(32)
  for step in range(6):
    b = next(packed)
    assert b.kind == kind and b.step == step
    seg = b["segment_ids"]
    assert seg.shape == b["input_ids"].shape == (4, 32) and seg.dtype == np.int32
    assert b["labels"].shape == ((4, 3) if kind == "pair_classification" else (4, 32))
    np.testing.assert_array_equal(b["attention_mask"], seg > 0)
    assert (b["input_ids"][seg == 0] == tokenizer.pad_token_id).all()
    assert (1 <= seg.max(1)).all() and (seg.max(1) <= 3).all()
    for row in seg:  # sentences 1..k, in order, then padding
      n = (row > 0).sum()
      assert (row[n:] == 0).all() and (np.diff(row[:n]) >= 0).all()
    if kind == "mlm":
      assert ((b["labels"] != vocabulary.IGNORE_INDEX).sum(1) <= k_mlm).all()
    if kind == "pair_classification":  # a label per sentence, -100 for empty slots
      slots = np.arange(1, 4)[None] <= seg.max(1)[:, None]
      assert ((b["labels"] != vocabulary.IGNORE_INDEX) == slots).all()
    got = _segments(b)
    assert len(got) <= 16
    # This batch's sentences are the stream's next examples, each once.
    want = [_unpacked_examples(next(one_by_one))[0] for _ in got]
    assert sorted(got) == sorted(want)
  assert packed.get_state()["positions"] == one_by_one.get_state()["positions"]
  assert packed.realized_shares()[("pos", "tr")] == (1.0 if weights[0] else 0.0)


def test_packed_batches_take_the_padded_batches_sentences_when_they_fit(tokenizer):
  """With rows to spare, packing changes the layout only: each step holds exactly the
  sentences of the padded step, and the streams advance alike."""
  padded = _train_pipeline(_config(batch_size=8, max_length=64), tokenizer)
  packed = _train_pipeline(
      _config(batch_size=8, max_length=64, packing=8, packed_rows=4), tokenizer
  )
  empty_rows = 0
  for _ in range(12):
    p, q = next(padded), next(packed)
    assert (q.task, q.lang, q.step) == (p.task, p.lang, p.step)
    assert q["input_ids"].shape == (4, 64)
    assert sorted(_segments(q)) == sorted(_unpacked_examples(p))
    # A row left empty is padding: example_mask 0 exactly there.
    np.testing.assert_array_equal(q["example_mask"], q["segment_ids"].max(1) > 0)
    empty_rows += int((q["segment_ids"].max(1) == 0).sum())
  assert empty_rows > 0  # the case above did occur
  assert packed.get_state()["positions"] == padded.get_state()["positions"]


def test_packed_pipeline_resumes_exactly_and_slices_hosts(tokenizer):
  reference = _train_pipeline(_packed(), tokenizer)
  want = [next(reference) for _ in range(16)]
  run = _train_pipeline(_packed(), tokenizer)
  for _ in range(7):
    next(run)
  state = json.loads(json.dumps(run.get_state()))
  assert sum(state["batches"].values()) == 7
  restored = _train_pipeline(_packed(prefetch=2), tokenizer)
  restored.set_state(state)
  _assert_batches_equal([next(restored) for _ in range(9)], want[7:])
  assert restored.get_state() == reference.get_state()
  restored.close()
  assert {b.task for b in want[7:]} == {"pos", "xnli", "mlm"}
  hosts = [
      _train_pipeline(_packed(), tokenizer, process_index=p, process_count=2) for p in range(2)
  ]
  for w in want[:6]:
    parts = [next(h) for h in hosts]
    for k, v in w.items():
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), v)
  unpacked = _train_pipeline(_config(), tokenizer)
  with pytest.raises(ValueError, match="saved mixture state counts batches per stream, this"):
    unpacked.set_state(state)


def test_packer_first_fit_by_hand():
  def example(n, label):
    return {
        "input_ids": np.r_[np.full(n, 7 + label), np.ones(8 - n)].astype(np.int32),
        "attention_mask": (np.arange(8) < n).astype(np.int32),
        "token_type_ids": np.zeros(8, np.int32),
        "labels": np.asarray(label, np.int32),
        "task_id": np.asarray(2, np.int32),
    }

  lengths = [5, 4, 3, 2, 2, 6, 1]
  packer = features.Packer(8, 2, pad_id=1)
  rows, taken = packer.fill(lambda i: example(lengths[i], i), 2)
  # 5 -> row 0; 4 -> row 1; 3 -> row 0 (full); 2 -> row 1 (two sentences); the next 2 fits no row.
  assert taken == 4
  np.testing.assert_array_equal(rows[0]["segment_ids"], [1] * 5 + [2] * 3)
  np.testing.assert_array_equal(rows[1]["segment_ids"], [1] * 4 + [2] * 2 + [0] * 2)
  np.testing.assert_array_equal(rows[1]["input_ids"], [8] * 4 + [10] * 2 + [1] * 2)
  np.testing.assert_array_equal(rows[0]["labels"], [0, 2])
  np.testing.assert_array_equal(rows[1]["attention_mask"], [1] * 6 + [0] * 2)
  assert int(rows[1]["task_id"]) == 2
  # At most 3 examples: 5 -> row 0, 4 -> row 1, 3 -> row 0; a third row stays empty padding.
  rows, taken = packer.fill(
      lambda i: {**example(lengths[i], i), "example_mask": np.int32(1)}, 3, max_examples=3
  )
  assert taken == 3
  np.testing.assert_array_equal(rows[1]["segment_ids"], [1] * 4 + [0] * 4)
  np.testing.assert_array_equal(rows[2]["segment_ids"], [0] * 8)
  np.testing.assert_array_equal(rows[2]["input_ids"], [1] * 8)
  np.testing.assert_array_equal(rows[2]["labels"], [vocabulary.IGNORE_INDEX] * 2)
  assert [int(r["example_mask"]) for r in rows] == [1, 1, 0] and int(rows[2]["task_id"]) == 2
  with pytest.raises(ValueError, match="at least 2 sentences"):
    features.Packer(8, 1, pad_id=1)


@pytest.mark.parametrize("value", [1, -2, True])
def test_bad_packing_is_a_config_error(value):
  with pytest.raises(ConfigError, match=r"config.data.packing: .* an int >= 2"):
    environment.parse(_config(packing=value), 1)
  with pytest.raises(TypeError):  # configs/common.py's int default refuses a float outright
    _config(packing=2.5)
  assert decode(_packed(packing=3)).data.packing == 3
  assert decode(_config()).data.packing == vocabulary.PACKING_OFF


@pytest.mark.parametrize(
    "data,expected",
    [
        ({"packing": 4}, r"packed_rows: 0 is not an int in \[1, batch_size = 4\]"),
        ({"packing": 4, "packed_rows": 5}, r"packed_rows: 5 is not an int in \[1, batch_size"),
        ({"packed_rows": 2}, r"packed_rows: 2 is set but config.data.packing is off"),
        (
            {"packing": 4, "batch_size": 16, "packed_rows": 6},
            r"packed_rows: 6 is not divisible by the data-parallel mesh size 4 .*; set it to a "
            r"multiple of that, or unpack: --config.data.packing=0 --config.data.packed_rows=0",
        ),
        (
            {"packing": 2, "batch_size": 16, "packed_rows": 4},
            r"packed_rows: 4 rows of at most 2 sentences \(data.packing\) never hold a batch of "
            r"batch_size = 16",
        ),
    ],
)
def test_bad_packed_rows_are_config_errors(data, expected):
  config = _config(**data)
  config.mesh.shape = (4, 1, 1)
  with pytest.raises(ConfigError, match=expected) as error:
    environment.parse(config, 4)
  assert str(error.value).count("config.data.packed_rows: ") == 1  # one error, not a cascade
  assert decode(_packed()).data.packed_rows == 4


def test_packing_without_a_packed_rows_field_is_reported_not_raised():
  config = _config(packing=4)
  del config.data["packed_rows"]
  with pytest.raises(ConfigError, match=r"packed_rows: 0 is not an int in \[1, "):
    environment.parse(config, 1)
