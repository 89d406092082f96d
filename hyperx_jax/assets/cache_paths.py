"""Where the asset cache is and where each asset lives inside it."""

from __future__ import annotations

import dataclasses
import os

from hyperx_jax.assets.common import AssetError


def default_cache() -> str:
  return os.path.expanduser(os.environ.get("HYPERX_CACHE") or "~/.cache/hyperx_jax")


@dataclasses.dataclass
class Paths:
  """Where each asset lives inside a cache directory."""

  cache: str

  def __getattr__(self, name: str) -> str:
    rel = {
        "wheels": "wheels",
        "e5_small": "e5-small",
        "tr_pos": "data/tr_pos",
        "mo": "data/mo",
        "pairs": "data/pairs",
        "ner_pos": "data/ner_pos",
        "stamp": "PREPARED.json",
    }
    if name not in rel:
      raise AttributeError(name)
    return os.path.join(self.cache, rel[name])


def cache_paths(cache: str | None = None) -> Paths:
  """The `Paths` of `cache` (default: `default_cache()`), made absolute."""
  return Paths(os.path.abspath(cache or default_cache()))


ASSET_NAMES = {
    "cache": "cache",
    "wheels": "wheels",
    "e5-small": "e5_small",
    "tokenizer": "e5_small",
    "tr_pos": "tr_pos",
    "mo": "mo",
    "pairs": "pairs",
    "ner_pos": "ner_pos",
}


def asset_path(name: str, cache: str | None = None) -> str:
  if name not in ASSET_NAMES:
    raise AssetError(f"unknown asset {name!r}; known: {sorted(ASSET_NAMES)}")
  return getattr(cache_paths(cache), ASSET_NAMES[name])
