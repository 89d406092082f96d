"""URIEL typological feature vectors of languages, from the `lang2vec` package's data files.

    typology.resolve('zh_CN')                # -> 'zho' (ISO 639-3, as URIEL keys languages)
    typology.feature_matrix(['de', 'tur'])   # -> [2, F] float32, standardised (docs/method.md)

Features (lang2vec's names; F = 289 for the default three sets): `syntax_knn` (103 WALS / SSWL /
Ethnologue syntax features), `phonology_knn` (28) and `inventory_knn` (158), each a 0/1 value
where missing values were filled in from the language's nearest neighbours (lang2vec's
`feature_predictions.npz`), so every one of URIEL's 7,970 languages has a full vector.

The files are read directly with numpy: lang2vec's own loader imports `pkg_resources`, which
current setuptools no longer ships. URIEL / lang2vec data: CC BY-SA 4.0 (Littell et al., 2017).

A code is an ISO 639-3 code, or an ISO 639-1 code (mapped by lang2vec's `letter_codes.json`,
which also maps two ISO 639-2/B codes: `alb` -> `sqi`, `gre` -> `ell`),
optionally with a region or script suffix as gettext and BCP 47 write them (`zh_CN`, `pt-BR`,
`sr@latin`): the part before the first `_`, `-`, `@` or `.` names the language.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import json
import re
from typing import Sequence

import numpy as np

from hyperx_jax.config.vocabulary import TYPOLOGY_FEATURE_SETS

PACKAGE = "lang2vec"
FEATURES_FILE = "feature_predictions.npz"  # [languages, features, 1 source ('predicted')]
LETTER_CODES_FILE = "letter_codes.json"  # ISO 639-1 -> ISO 639-3
ALL_SETS = tuple(TYPOLOGY_FEATURE_SETS)


class UnknownLanguageError(KeyError):
  """A language code that URIEL does not know; the message names close matches."""

  def __str__(self) -> str:
    return str(self.args[0])


@functools.cache
def _data() -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...], dict[str, str]]:
  """(values [languages, features] uint8, ISO 639-3 codes, feature names, 639-1 -> 639-3)."""
  # Found through the installed distribution, not by importing it: lang2vec also installs a
  # `lang2vec.py` script beside console scripts, which `import lang2vec` finds first there.
  data = importlib.metadata.distribution(PACKAGE).locate_file(PACKAGE) / "data"
  with (data / FEATURES_FILE).open("rb") as f:
    npz = np.load(f)
    sources = list(npz["sources"])
    values = npz["data"][:, :, sources.index("predicted")].astype(np.uint8)
    codes, names = tuple(str(c) for c in npz["langs"]), tuple(str(n) for n in npz["feats"])
  letters = json.loads((data / LETTER_CODES_FILE).read_text())
  return values, codes, names, letters


def language_part(code: str) -> str:
  """'zh_CN' -> 'zh', 'pt-BR' -> 'pt', 'sr@latin' -> 'sr', 'DEU' -> 'deu'."""
  return re.split(r"[_\-@.]", code.strip(), maxsplit=1)[0].lower()


def resolve(code: str) -> str:
  """The ISO 639-3 code URIEL keys `code`'s language by; UnknownLanguageError otherwise."""
  _, codes, _, letters = _data()
  lang = language_part(code)
  lang = letters.get(lang, lang)
  if lang not in _index():
    known = sorted(set(codes) | set(letters))
    close = difflib.get_close_matches(language_part(code), known, n=5, cutoff=0.6)
    hint = f"close matches: {close}" if close else "no close match"
    raise UnknownLanguageError(
        f"{code!r} is not a language URIEL knows ({hint}; expected an ISO 639-1 code such as "
        f"'de' or an ISO 639-3 code such as 'deu', optionally with a region: 'zh_CN')"
    )
  return lang


@functools.cache
def _index() -> dict[str, int]:
  return {c: i for i, c in enumerate(_data()[1])}


def feature_columns(feature_sets: Sequence[str]) -> np.ndarray:
  """Column indices of `feature_sets` in the data, in set order then file order."""
  _, _, names, _ = _data()
  unknown = [s for s in feature_sets if s not in TYPOLOGY_FEATURE_SETS]
  if unknown:
    raise ValueError(f"unknown typology feature sets {unknown}; known: {list(ALL_SETS)}")
  return np.asarray(
      [
          i
          for s in feature_sets
          for i, n in enumerate(names)
          if n.startswith(TYPOLOGY_FEATURE_SETS[s])
      ]
  )


def raw_features(codes: Sequence[str], feature_sets: Sequence[str] = ALL_SETS) -> np.ndarray:
  """The 0/1 URIEL values of each language: [len(codes), F] uint8."""
  values = _data()[0]
  rows = [_index()[resolve(c)] for c in codes]
  return values[np.ix_(rows, feature_columns(feature_sets))]


@functools.cache
def _standardisation(feature_sets: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, float]:
  """Per-feature mean and std over all URIEL languages, and the mean L1 norm of the
  standardised vectors (features constant over URIEL get std inf, i.e. the value 0)."""
  f = _data()[0][:, feature_columns(feature_sets)].astype(np.float64)
  mean, std = f.mean(0), f.std(0)
  std = np.where(std > 0, std, np.inf)
  return mean, std, float(np.abs((f - mean) / std).sum(1).mean())


def feature_matrix(codes: Sequence[str], feature_sets: Sequence[str] = ALL_SETS) -> np.ndarray:
  """The typology vectors z_l of `codes`: [len(codes), F] float32.

  z = (f - μ) / σ / c, with μ, σ each feature's mean and std over URIEL's languages and c the
  mean L1 norm of (f - μ) / σ over them: an average language's z has L1 norm 1, as the one-hot
  vector a learned embedding row reads, so Adam moves z · W at a learned row's rate.
  """
  mean, std, scale = _standardisation(tuple(feature_sets))
  return ((raw_features(codes, feature_sets) - mean) / std / scale).astype(np.float32)
