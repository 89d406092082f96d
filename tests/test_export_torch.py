"""The export in PyTorch: `torch_loader.load_exported` (plain transformers, no JAX) and the
AdapterHub directories (`adapters` library, in .venv-adapters) give our JAX model's hidden states
and logits on real sentences, tokenised by the real e5-small tokenizer, on the real e5-small
encoder with random (non-trivial) adapters, heads and LayerNorms; for Hyper-X and MAD-X (a stack
of two adapters), a pair task and a token task."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hyperx_jax  # noqa: F401
from hyperx_jax import export
from hyperx_jax import run as run_lib
from hyperx_jax.assets import AssetError, asset_path
from hyperx_jax.config import decode

from configs import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hyperx_jax import torch_loader  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
ADAPTERS_PYTHON = REPO / ".venv-adapters" / "bin" / "python"
SENTENCES = [
    "The committee approved the new budget on Tuesday.",
    "Ankara, Türkiye'nin başkentidir ve İç Anadolu'da yer alır.",
    "Die Katze schläft auf dem warmen Fensterbrett.",
    "She did not expect the train to be so late.",
]
PAIRS = [
    ("A man is playing a guitar on stage.", "Someone is performing music."),
    ("Bugün hava çok güzel.", "Dışarıda kar yağıyor."),
    ("The museum opens at nine.", "The museum is closed all day."),
    ("Er liest ein Buch im Park.", "Ein Mann ist draußen."),
]
SEQ = 32
TOLERANCE = 1e-4


def _e5() -> str:
  try:
    path = asset_path("e5-small")
  except AssetError as e:
    pytest.skip(f"offline assets: {e}")
  if not os.path.exists(os.path.join(path, "model.safetensors")):
    pytest.skip(f"e5-small not prepared at {path} (`python -m hyperx_jax.assets prepare`)")
  return path


def _randomise(tree, seed, std=0.05):
  """Non-trivial adapters, heads and LayerNorms (numpy noise: no per-shape compilations)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jax.device_put(
          np.asarray(x) + std * rng.standard_normal(x.shape).astype(x.dtype), x.sharding
      ),
      tree,
  )


def _tokens(e5: str, task: str) -> dict[str, np.ndarray]:
  tokenizer = transformers.AutoTokenizer.from_pretrained(e5)
  first, second = (SENTENCES, None) if task == "tag" else map(list, zip(*PAIRS))
  enc = tokenizer(
      first, second, padding="max_length", max_length=SEQ, truncation=True, return_tensors="np"
  )
  return {
      "input_ids": enc["input_ids"].astype(np.int32),
      "attention_mask": enc["attention_mask"].astype(np.int32),
  }


@nnx.jit(static_argnames="task")
def _forward(model, batch, task):
  return model.encode(batch, task), model(batch, task)


def _mesh():
  return jax.make_mesh(
      (1, 1, 1),
      ("data", "fsdp", "tensor"),
      devices=jax.devices()[:1],
      axis_types=(jax.sharding.AxisType.Auto,) * 3,
  )


def _make_model(root: pathlib.Path, e5: str, method: str, pooling: str):
  """A model on e5-small with random trainable parameters, and its spec (the restore path is
  tested in test_export.py)."""
  config = tiny.get_config(f"workspace={root / 'ws'},tasks=tag+pair,method={method}")
  config.model.checkpoint = config.tokenizer = e5
  config.tasks.pair.pooling = pooling
  spec = decode(config)
  (graphdef, trainable, frozen, _), _ = run_lib.create_model(spec, _mesh())
  return nnx.merge(graphdef, _randomise(trainable, seed=len(method)), frozen), spec


# (method, pooling of the pair task): Hyper-X pools by mean, MAD-X reads <s>.
RUNS = {"hyperx": "mean", "madx": "cls"}
EXPORTS = [
    ("hyperx", "tag", "aa"),
    ("hyperx", "pair", "bb"),
    ("madx", "tag", "cc"),
    ("madx", "pair", "aa"),
]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """Per (method, task, lang): the export dir, the token inputs and our JAX outputs."""
  e5 = _e5()
  root = tmp_path_factory.mktemp("e5_export")
  out = {}
  for method, pooling in RUNS.items():
    model, spec = _make_model(root, e5, method, pooling)
    for m, task, lang in EXPORTS:
      if m != method:
        continue
      tokens = _tokens(e5, task)
      batch = {
          **{k: jnp.asarray(v) for k, v in tokens.items()},
          "token_type_ids": jnp.zeros((len(tokens["input_ids"]), SEQ), jnp.int32),
          "task_id": jnp.full((len(tokens["input_ids"]),), model.task_id(task)),
          "lang_id": jnp.full((len(tokens["input_ids"]),), model.lang_id(lang)),
      }
      hidden, logits = _forward(model, batch, task)
      directory = root / f"{method}_{task}_{lang}"
      adapterhub = not (task == "pair" and pooling == "mean")
      export.export_adapter(
          model, spec, task, lang, str(directory), format="adapterhub" if adapterhub else "native"
      )
      out[method, task] = (directory, tokens, np.asarray(hidden), np.asarray(logits))
    if method == "hyperx":  # AdapterHub has no mean-pooling head: the export says so
      with pytest.raises(ValueError, match="pools by 'mean'; AdapterHub's classification head"):
        export.export_adapter(model, spec, "pair", "bb", str(root / "refused"), format="adapterhub")
      assert not (root / "refused").exists()
  return e5, root, out


def _max_diffs(tokens, hidden, logits, their_hidden, their_logits):
  """max |diff| over real tokens (hidden states, and token logits) / over examples (pair)."""
  real = tokens["attention_mask"].astype(bool)
  hidden_diff = float(np.abs(their_hidden - hidden)[real].max())
  logit_diff = np.abs(their_logits - logits)
  logit_diff = float((logit_diff[real] if logit_diff.ndim == 3 else logit_diff).max())
  return hidden_diff, logit_diff


@pytest.mark.parametrize("method,task", [(m, t) for m, t, _ in EXPORTS])
def test_torch_loader_matches_jax(exports, method, task):
  e5, _, out = exports
  directory, tokens, hidden, logits = out[method, task]
  model = torch_loader.load_exported(str(directory), e5)
  assert len(model.encoder.encoder.layer[0].output.dropout[1]) == (2 if method == "madx" else 1)
  with torch.no_grad():
    result = model(torch.tensor(tokens["input_ids"]), torch.tensor(tokens["attention_mask"]))
  diffs = _max_diffs(tokens, hidden, logits, result.hidden_states.numpy(), result.logits.numpy())
  print(
      f"\n{method} {task}: torch_loader vs JAX max |diff| hidden {diffs[0]:.2e}, "
      f"logits {diffs[1]:.2e}"
  )
  assert max(diffs) <= TOLERANCE
  # The trained LayerNorms matter: the base encoder alone is far off.
  base = transformers.XLMRobertaModel.from_pretrained(e5, add_pooling_layer=False).eval()
  torch_loader.insert_adapters(base, _adapter_tensors(directory), model.config)
  with torch.no_grad():
    bare = base(
        input_ids=torch.tensor(tokens["input_ids"]),
        attention_mask=torch.tensor(tokens["attention_mask"]),
    ).last_hidden_state
  assert _max_diffs(tokens, hidden, logits, bare.numpy(), logits)[0] > 1e-2


def _adapter_tensors(directory):
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top

  return load_file(os.path.join(directory, "adapter.safetensors"))


def test_adapterhub_matches_jax(exports, tmp_path):
  """AdapterHub loads the `adapterhub/` directories (BnConfig, heads) and computes ours."""
  if not ADAPTERS_PYTHON.exists():
    pytest.skip(
        f"{ADAPTERS_PYTHON} is absent: `make adapters-venv` builds it (the `adapters` "
        "library pins an older transformers than requirements.txt)"
    )
  e5, _, out = exports
  jobs = []
  for (method, task), (directory, tokens, _, _) in out.items():
    if json.loads((directory / "hyperx_export.json").read_text())["adapterhub"] is None:
      continue
    np.savez(tmp_path / f"{method}_{task}_in.npz", **tokens)
    jobs.append(
        {
            "export": str(directory),
            "inputs": str(tmp_path / f"{method}_{task}_in.npz"),
            "out": str(tmp_path / f"{method}_{task}_out.npz"),
            "key": [method, task],
        }
    )
  assert len(jobs) == 3  # hyperx tag, madx tag, madx pair
  (tmp_path / "jobs.json").write_text(json.dumps({"base": e5, "jobs": jobs}))
  subprocess.run(
      [
          str(ADAPTERS_PYTHON),
          str(REPO / "tests" / "adapterhub_worker.py"),
          str(tmp_path / "jobs.json"),
      ],
      check=True,
      cwd=tmp_path,
  )
  for job in jobs:
    _, tokens, hidden, logits = out[tuple(job["key"])]
    theirs = np.load(job["out"])
    diffs = _max_diffs(tokens, hidden, logits, theirs["hidden"], theirs["logits"])
    print(
        f"\n{job['key']}: AdapterHub vs JAX max |diff| hidden {diffs[0]:.2e}, "
        f"logits {diffs[1]:.2e}"
    )
    assert max(diffs) <= TOLERANCE


def test_torch_loader_needs_no_jax(exports):
  """With jax and flax unimportable, the loader still imports and builds the model."""
  e5, _, out = exports
  directory = out["madx", "tag"][0]
  code = (
      "import sys; sys.modules['jax'] = sys.modules['flax'] = None\n"
      "from hyperx_jax.torch_loader import load_exported\n"
      f"load_exported({str(directory)!r}, {e5!r})\n"
      "assert sys.modules['jax'] is None and sys.modules['flax'] is None\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
