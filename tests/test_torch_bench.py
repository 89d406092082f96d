"""torch_bench compares the same math: at a tiny shape (2 layers, vocabulary 512, no dropout)
the PyTorch step started from our initial parameters gives our loss, our gradient for every
trainable tensor and, after two AdamW steps, our parameters and loss; and `main --tiny` runs."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import transformers  # noqa: E402

from hyperx_jax import torch_reference  # noqa: E402
from hyperx_jax.benchmarks import common as bcommon  # noqa: E402
from hyperx_jax.benchmarks import torch_bench as tb  # noqa: E402
from hyperx_jax.benchmarks.common import TASK, SpeedRun  # noqa: E402
from hyperx_jax.config import decode, environment  # noqa: E402
from hyperx_jax.models import losses  # noqa: E402
from hyperx_jax.models.hypernet import HyperNetConfig  # noqa: E402

TOLERANCE = 1e-4  # of each tensor's largest magnitude
# Updates (new - initial parameters): Adam divides by sqrt(v), which turns the last-bit
# differences of near-zero gradient entries into relative differences of their steps.
UPDATE_TOLERANCE = 1e-3
BATCH, LENGTH = 4, 16


def _runs(method: str) -> tuple[SpeedRun, tb.TorchRun]:
  with tb.encoder_checkpoint(tiny=True) as (checkpoint, _):
    c = tb.torch_bench_config(method, checkpoint, BATCH, LENGTH, tiny=True)
    c.model.hidden_dropout = c.model.attention_dropout = c.model.classifier_dropout = 0.0
    c.optim.warmup_steps = 0  # a full-size first update
    local = tb.text_like_batch(
        BATCH, LENGTH, tb.TINY_ENCODER["vocab_size"], tb.TINY_ENCODER["pad_token_id"]
    )
    ours = SpeedRun(decode(c), local)
  return ours, tb.TorchRun(ours, local)


def _our_loss_and_grads(ours: SpeedRun):
  def loss_fn(params):
    model = nnx.merge(ours.graphdef, params, ours.frozen)
    return losses.compute_loss(model, ours.batch_arrays, TASK)[0]

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(ours.state[0])
  return float(loss), torch_reference.our_params(grads)


def _torch_trainable(theirs: tb.TorchRun, like, grads: bool = False) -> dict[str, np.ndarray]:
  tensors = {
      n: (p.grad if grads else p).detach().numpy().copy()
      for n, p in theirs.model.named_parameters()
      if p.requires_grad
  }
  return torch_reference.ours_from_torch(tensors, like, theirs.model.encoder_config)


def _assert_close(
    ours: dict, theirs: dict, what: str, tolerance: float = TOLERANCE, slack: dict | None = None
) -> None:
  """Each tensor within `tolerance` of its largest magnitude (+ `slack[path]`, absolute)."""
  assert set(ours) == set(theirs)
  for path, a in ours.items():
    scale = float(np.abs(a).max())
    error = float(np.abs(a - theirs[path]).max())
    allowed = tolerance * scale + (slack or {}).get(path, 0.0) + 1e-12
    assert error <= allowed, f"{what} {path}: max error {error:.3g}, scale {scale:.3g}"


@pytest.mark.parametrize("method", tb.MIRRORED_METHODS)
def test_torch_step_is_our_step(method):
  ours, theirs = _runs(method)
  initial = {p: v.copy() for p, v in torch_reference.our_params(ours.state[0]).items()}
  trained = {n for n, p in theirs.model.named_parameters() if p.requires_grad}
  assert trained == set(torch_reference.torch_tensors(initial, theirs.model.encoder_config))
  our_loss, our_grads = _our_loss_and_grads(ours)
  their_loss, _ = theirs.loss()
  assert float(their_loss) == pytest.approx(our_loss, rel=TOLERANCE)
  _assert_close(our_grads, _torch_trainable(theirs, initial, grads=True), "gradient")
  assert any(np.abs(g).max() > 0 for p, g in our_grads.items() if p.startswith("adapters/"))
  for _ in range(2):
    ours.step(timed=False)
    theirs.step(timed=False)
  assert theirs.metrics["loss"] == pytest.approx(float(ours.metrics["loss"]), rel=TOLERANCE)
  assert theirs.metrics["grad_norm"] == pytest.approx(
      float(ours.metrics["grad_norm"]), rel=TOLERANCE
  )
  updated = torch_reference.our_params(ours.state[0])
  _assert_close(updated, _torch_trainable(theirs, initial), "parameter")
  # An update is a difference of float32 parameters: each side rounds to the parameter's ulp
  # (1.2e-7 near 1, the LayerNorm scales, whose updates are ~1e-4).
  ulps = {p: 2 * float(np.spacing(np.abs(v).max())) for p, v in initial.items()}
  moved = {p: updated[p] - initial[p] for p in initial}
  _assert_close(
      moved,
      {p: v - initial[p] for p, v in _torch_trainable(theirs, initial).items()},
      "update",
      UPDATE_TOLERANCE,
      ulps,
  )


def test_main_tiny(tmp_path, capsys):
  threads = torch.get_num_threads()
  try:
    tb.main(["--tiny", "--torch_threads", "1", "--profile", str(tmp_path)])
  finally:
    torch.set_num_threads(threads)
  out = capsys.readouterr().out
  assert "ours / PyTorch (median step time):" in out
  assert "CPU per step (median, all threads):" in out and "XLA temporaries of our step:" in out
  assert "one 32 x 32 @ 32 x 64 matmul (the FFN's first, fp32): ours " in out
  assert "XLA cost analysis" in out and "HLO ops by self time" in out
  assert list(tmp_path.glob("plugins/profile/*/perfetto_trace.json.gz"))
  assert "dropout 0.1," in out


def test_matmul_rates_count_two_flops_per_multiply_add():
  """2·m·k·n FLOPs over the median time: with every timed call taking 1 ms, 2·4·8·16 / 1e-3 s."""
  ticks = iter(range(1000))
  rates = tb.matmul_rates(4, 8, 16, repeats=3, clock=lambda: 1e-3 * next(ticks))
  per_s = 2 * 4 * 8 * 16 / 1e-3 / 1e9
  assert rates == pytest.approx({"ours (JAX)": per_s, "PyTorch": per_s})


def test_time_interleaved_alternates_and_skips_the_warmup_rounds():
  """Round 0 is untimed; then one call of each per round, in order; each call costs its clock
  ticks (a's 1, b's 2), so the times are [1, 1] and [2, 2]."""
  now, order = [0], []

  def call(name, cost):
    def run(i):
      order.append((name, i))
      now[0] += cost

    return run

  times = bcommon.time_interleaved(
      {"a": call("a", 1), "b": call("b", 2)}, repeats=2, clock=lambda: now[0]
  )
  assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
  assert times == {"a": [1, 1], "b": [2, 2]}


def test_dropout_option_sets_every_rate_on_both_sides():
  with tb.encoder_checkpoint(tiny=True) as (checkpoint, _):
    spec = decode(tb.torch_bench_config("hyperx", checkpoint, 2, 16, tiny=True, dropout=0.0))
    enc = environment.encoder_config(spec)
  assert (enc.hidden_dropout, enc.attention_dropout, spec.model.classifier_dropout) == (0, 0, 0)
  hf = transformers.XLMRobertaConfig(**enc.to_hf())  # what TorchModel builds its encoder from
  assert (hf.hidden_dropout_prob, hf.attention_probs_dropout_prob) == (0, 0)
  with pytest.raises(SystemExit):
    tb.main(["--tiny", "--dropout", "1.0"])


@pytest.mark.parametrize(
    "change", [{"unit_projection": True}, {"language_source": "typology"}, {"use_projector": False}]
)
def test_other_hypernetworks_are_refused(change):
  """The PyTorch side mirrors the default hypernetwork only: anything else is an error, not a
  silently different comparison."""
  with pytest.raises(ValueError, match="mirrors the default Hyper-X only"):
    torch_reference._check_default_hyperx(dataclasses.replace(HyperNetConfig(), **change))
