"""benchmarks/gpu_check.py: the FLOP count by hand, the peak table, and a tiny run on CPU."""

import json
import math

import pytest

from hyperx_jax.benchmarks import gpu_check
from hyperx_jax.config.sections import TaskSpec
from hyperx_jax.models.hypernet import HyperNetConfig
from hyperx_jax.models.model import ModelConfig
from hyperx_jax.models.xlmr import EncoderConfig


def test_train_step_flops_by_hand():
  # h 4, FFN 8, 1 layer, b 2; source 1 + 1 + 1 = 3, P 2; one row of 2 tokens, 3 labels.
  model = ModelConfig(
      method="hyperx",
      encoder=EncoderConfig(
          vocab_size=10, hidden_size=4, num_layers=1, num_heads=1, intermediate_size=8
      ),
      hypernet=HyperNetConfig(task_dim=1, lang_dim=1, layer_dim=1, projected_dim=2, bottleneck=2),
      tasks=(TaskSpec("tag", "token_classification", ("a", "b", "c")),),
      languages=("en",),
  )
  flops = gpu_check.train_step_flops(model, rows=1, length=2, num_labels=3)
  # per token: q, k, v, out 4 x (4 x 4) + FFN 2 x (4 x 8) = 128 multiply-adds, x 2 tokens;
  # forward + input gradients (frozen weights): x 2
  assert flops["backbone"] == 2 * 128 * 2 * 2
  # q kᵀ and p v: 2 x (2 x 2 x 4) multiply-adds; forward + dq, dk + dp, dv: x 3
  assert flops["attention"] == 2 * 32 * 3
  # down 4 x 2 + up 2 x 4 per token, 2 tokens; generated weights get gradients: x 3
  assert flops["adapters"] == 2 * 16 * 2 * 3
  assert flops["head"] == 2 * 12 * 2 * 3  # 4 -> 3 per token
  # projector 3 x 3 + 3 x 2; generators 2 -> 8 + 2 + 8 + 4 + 4 + 4 (down, its bias, up, its
  # bias, LayerNorm scale and bias); one source (one layer)
  assert flops["hypernet"] == 2 * (9 + 6 + 2 * 30) * 3


@pytest.mark.parametrize(
    "kind,peak",
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA H100 PCIe", None),
        ("cpu", None),
    ],
)
def test_peak_flops_table(kind, peak):
  assert gpu_check.peak_flops(kind) == peak


def test_tiny_check_runs_end_to_end_on_cpu(tmp_path, capsys):
  out = tmp_path / "check.json"
  gpu_check.main(["--tiny", "--lengths", "synthetic", "--peak_flops", "1e12", "--out", str(out)])
  result = json.loads(out.read_text())
  printed = capsys.readouterr().out
  assert [(a["layout"], a["attention"]) for a in result["arms"]] == [
      ("padded", "xla"),
      ("packed, k = 4", "xla"),
  ]
  assert "cudnn arms skipped: cuDNN attention needs an NVIDIA GPU" in printed
  padded, packed = result["arms"]
  assert padded["sentences"] == 4 and packed["sentences"] > 4
  assert packed["useful_tokens"] > padded["useful_tokens"]
  total = sum(result["flops_per_step"].values())
  for arm in result["arms"]:
    assert math.isfinite(arm["last_loss"]) and arm["step_s"] > 0
    assert arm["mfu"] == pytest.approx(total / arm["step_s"] / 1e12)
    assert arm["useful_tokens_per_s"] == pytest.approx(arm["useful_tokens"] / arm["step_s"])
    assert f"{arm['layout']:<15}{arm['attention']:<11}" in printed
