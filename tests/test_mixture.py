"""Temperature rates, stream sampling, per-epoch shuffles and exact resume of the mixture."""

import dataclasses
import json

import numpy as np
import pytest

from hyperx_jax.data import mixture
from hyperx_jax.data.features import Packer


def _featurize(example, rng):
  # The "noise" stands for MLM masking: it must follow the example through resume and hosts.
  return {"x": np.array(example, np.int32), "noise": rng.integers(0, 2**30, size=3)}


def _streams(sizes=(5, 12, 30), max_examples=None):
  return [
      mixture.Stream(
          task=f"t{i}",
          lang="xx",
          examples=list(range(1000 * i, 1000 * i + n)),
          featurize=_featurize,
          max_examples=max_examples,
      )
      for i, n in enumerate(sizes)
  ]


def _mix(streams, **kw):
  kw = {"global_batch_size": 4, "seed": 7, **kw}
  return mixture.MixtureIterator(streams, **kw)


def _assert_same_batches(got, want):
  assert [b.stream_id for b in got] == [b.stream_id for b in want]
  for g, w in zip(got, want):
    assert g.features.keys() == w.features.keys()
    for k in g.features:
      np.testing.assert_array_equal(g.features[k], w.features[k])


@pytest.mark.parametrize(
    "temperature, want",
    [
        (1.0, [0.1, 0.9]),
        (2.0, [0.25, 0.75]),  # sqrt(.1) : sqrt(.9) = 1 : 3
        (5.0, [0.1**0.2 / (0.1**0.2 + 0.9**0.2), 0.9**0.2 / (0.1**0.2 + 0.9**0.2)]),
        (float("inf"), [0.5, 0.5]),
    ],
)
def test_temperature_rates_hand_computed(temperature, want):
  np.testing.assert_allclose(mixture.temperature_rates([100, 900], temperature), want, rtol=1e-12)


def test_temperature_5_value():
  # 0.1^0.2 = 0.630957, 0.9^0.2 = 0.979148.
  np.testing.assert_allclose(mixture.temperature_rates([100, 900]), [0.391874, 0.608126], atol=1e-6)


def test_rates_reject_bad_input():
  with pytest.raises(ValueError, match="at least one example"):
    mixture.temperature_rates([10, 0])
  with pytest.raises(ValueError, match="temperature"):
    mixture.temperature_rates([10, 3], temperature=0)
  with pytest.raises(ValueError, match="expected 3 weights"):
    mixture.normalize_weights([1, 2], 3)


def test_draw_frequencies_match_rates():
  rates = mixture.temperature_rates([100, 900, 2500, 40], temperature=2.0)
  cumulative = np.cumsum(rates)
  draws = np.array([mixture.draw_stream(cumulative, 3, t) for t in range(10_000)])
  freqs = np.bincount(draws, minlength=len(rates)) / draws.size
  np.testing.assert_allclose(freqs, rates, atol=0.01)
  # A function of (seed, step) only: same draws again, different with another seed.
  again = [mixture.draw_stream(cumulative, 3, t) for t in range(200)]
  other = [mixture.draw_stream(cumulative, 4, t) for t in range(200)]
  assert again == draws[:200].tolist()
  assert other != again


def test_explicit_weights_are_used():
  it = _mix(_streams(), weights=[0, 1, 0])
  np.testing.assert_allclose(it.rates, [0, 1, 0])
  assert {next(it).stream_id for _ in range(20)} == {1}


def test_epochs_cover_every_example_and_reshuffle():
  n = 12
  it = _mix(_streams(sizes=(n,)), global_batch_size=n)
  first, second = next(it).features["x"], next(it).features["x"]
  assert sorted(first.tolist()) == list(range(n))
  assert sorted(second.tolist()) == list(range(n))
  assert first.tolist() != second.tolist()
  assert first.tolist() != list(range(n))


def test_few_shot_cap_takes_first_k():
  it = _mix(_streams(sizes=(50,), max_examples=8), global_batch_size=8)
  assert it.streams[0].size == 8
  for _ in range(3):
    assert sorted(next(it).features["x"].tolist()) == list(range(8))


def test_streams_have_distinct_orders():
  streams = _streams(sizes=(20, 20))
  a = mixture.stream_dataset(streams[0], seed=1)
  b = mixture.stream_dataset(streams[1], seed=1)
  assert [a[i]["x"] for i in range(20)] != [b[i]["x"] - 1000 for i in range(20)]
  # A stream's order depends on its name, not on its place among the streams.
  alone = mixture.MixtureIterator(streams[1:], global_batch_size=20, seed=1)
  np.testing.assert_array_equal(next(alone).features["x"], [b[i]["x"] for i in range(20)])


def test_resume_from_json_state_is_exact():
  reference = _mix(_streams())
  want = [next(reference) for _ in range(40)]
  run = _mix(_streams())
  for _ in range(17):
    next(run)
  state = json.loads(json.dumps(run.get_state()))
  restored = _mix(_streams())
  restored.set_state(state)
  got = [next(restored) for _ in range(23)]
  _assert_same_batches(got, want[17:])
  # The 5-example stream went through several epochs (a boundary inside the resumed part).
  assert restored.epochs()["t0/xx"] > state["positions"]["t0/xx"] / 5 + 1


def test_host_slices_concatenate_to_global_batch():
  whole = _mix(_streams(), global_batch_size=8)
  hosts = [
      _mix(_streams(), global_batch_size=8, process_index=p, process_count=2) for p in range(2)
  ]
  for _ in range(15):
    w = next(whole)
    parts = [next(h) for h in hosts]
    assert parts[0].stream_id == parts[1].stream_id == w.stream_id
    for k in w.features:
      np.testing.assert_array_equal(
          np.concatenate([parts[0].features[k], parts[1].features[k]]), w.features[k]
      )


def test_realized_shares_and_state_errors():
  it = _mix(_streams(sizes=(100, 900)), temperature=1.0)
  for _ in range(2000):
    next(it)
  shares = it.realized_shares()
  assert abs(shares["t1/xx"] - 0.9) < 0.03
  assert sum(shares.values()) == pytest.approx(1.0)
  other = _mix(_streams(sizes=(3,)))
  with pytest.raises(ValueError, match=r"saved state has streams .*t1/xx"):
    other.set_state(it.get_state())
  with pytest.raises(ValueError, match="not divisible"):
    _mix(_streams(), global_batch_size=5, process_count=2)
  packed = [dataclasses.replace(s, packer=Packer(8, 2, pad_id=1)) for s in _streams()]
  for rows in (0, 5, 3):  # none, more than the batch, not divisible by the hosts
    with pytest.raises(ValueError, match=rf"packed rows per batch {rows} must be in \[1, 4\]"):
      _mix(packed, global_rows=rows, process_count=2)


def test_skipped_example_takes_next_in_source_order():
  def skip_two(example, rng):
    return None if example == 2 else _featurize(example, rng)

  stream = mixture.Stream("t", "xx", [0, 1, 2, 3], skip_two)
  it = mixture.MixtureIterator([stream], global_batch_size=4, seed=0)
  for _ in range(3):  # every epoch: 2 replaced by 3
    assert sorted(next(it).features["x"].tolist()) == [0, 1, 3, 3]
  never = mixture.Stream("t", "xx", [0, 1], lambda ex, rng: None)
  with pytest.raises(ValueError, match="skipped all 2 examples"):
    next(mixture.MixtureIterator([never], global_batch_size=1, seed=0))


def test_state_round_trips_through_orbax_json(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  it = _mix(_streams())
  for _ in range(9):
    next(it)
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckpt:
    ckpt.save(tmp_path / "data_state", args=ocp.args.JsonSave(it.get_state()))
    restored_state = ckpt.restore(tmp_path / "data_state", args=ocp.args.JsonRestore())
  restored = _mix(_streams())
  restored.set_state(restored_state)
  _assert_same_batches([next(restored) for _ in range(5)], [next(it) for _ in range(5)])
