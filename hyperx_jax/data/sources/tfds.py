"""TFDS builders (universal_dependencies, xtreme_pos, wikiann, xnli, multi_nli) read through
`tfds.data_source` as array_record, without TensorFlow."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hyperx_jax.config.vocabulary import PAIR, TOKEN
from hyperx_jax.data.sources.base import WHERE, Example, Format, SourceError, need

# Language -> the UD treebank (a config of TFDS `universal_dependencies`) used for POS.
UD_TREEBANKS = {
    "en": "en_ewt",
    "ar": "ar_padt",
    "zh": "zh_gsd",
    "tr": "tr_imst",
    "kk": "kk_ktb",
    "ta": "ta_ttb",
    "yue": "yue_hk",
    "br": "br_keb",
    "is": "is_modern",
    "tl": "tl_trg",
    "yo": "yo_ytb",
    "fo": "fo_oft",
    "ug": "ug_udt",
    "mt": "mt_mudt",
    "sa": "sa_ufal",
    "hsb": "hsb_ufal",
    "gn": "gn_oldtudet",
    "ja": "ja_gsd",
    "de": "de_gsd",
    "fr": "fr_gsd",
    "es": "es_gsd",
    "ru": "ru_gsd",
    "hi": "hi_hdtb",
    "ko": "ko_gsd",
    "fi": "fi_tdt",
    "th": "th_pud",
    "vi": "vi_vtb",
    "he": "he_htb",
    "id": "id_gsd",
    "it": "it_isdt",
}


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets.text  # noqa: F401  registers xnli, wikiann

  return tfds


def _trust_local_files(builder, manual_dir: str) -> None:
  """Lets the builder take local files in `manual_dir` whose checksums differ from the
  registered release (test subsets, patched treebanks).

  TFDS's download manager already picks a URL's file up from `manual_dir` when that holds
  the file name registered for the URL (e.g. `tr_imst-ud-train.conllu`), but then checks its
  sha256 against the release. This wraps the builder's download manager so that, for the
  files present in `manual_dir`, the local checksum is the expected one.
  """
  tfds = _tfds()
  make = builder._make_download_manager  # pylint: disable=protected-access

  def make_trusting(download_dir, download_config):
    manager = make(download_dir=download_dir, download_config=download_config)
    infos = manager._url_infos  # pylint: disable=protected-access
    for url, info in list(infos.items()):
      local = Path(manual_dir) / (info.filename or "")
      if info.filename and local.is_file():
        infos[url] = tfds.download.checksums.compute_url_info(local)
    return manager

  builder._make_download_manager = make_trusting  # pylint: disable=protected-access


# Archive suffix -> TFDS extract-method name (the prefix of its extraction directory).
_ARCHIVES = {".zip": "ZIP", ".tar.gz": "TAR_GZ", ".tgz": "TAR_GZ", ".tar": "TAR"}


def _pre_extract(manual_dir: str, download_dir: Path) -> None:
  """Unpacks archives of `manual_dir` where TFDS looks for their extraction.

  TFDS's own extractor needs TensorFlow (tf.io.gfile); it reuses an existing
  `<download_dir>/extracted/<METHOD>.<file name>`, so unpacking there with the standard
  library lets builders such as `xnli` prepare without TensorFlow.
  """
  for path in sorted(Path(manual_dir).iterdir()):
    method = next((m for suffix, m in _ARCHIVES.items() if path.name.endswith(suffix)), None)
    target = download_dir / "extracted" / f"{method}.{path.name}"
    if method is None or target.exists():
      continue
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if method == "ZIP":
      with zipfile.ZipFile(path) as z:
        z.extractall(partial)
    else:
      with tarfile.open(path) as t:
        t.extractall(partial, filter="data")
    partial.rename(target)


def prepare_tfds(
    name: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    builder_kwargs: Mapping | None = None,
    trust_local_files: bool = True,
):
  """Builds a TFDS dataset as array_record (once); returns the builder.

  With `manual_dir`, the files the builder would download are taken from there by their
  registered file names (TFDS's url_checksums; for UD: `<treebank>-ud-<split>.conllu`, every
  split of the treebank; for XNLI: `XNLI-1.0.zip`); with `trust_local_files` their checksums
  need not match the release. Archives there are unpacked without TensorFlow.
  `wikiann` reads its files with tf.io.gfile, so it needs TensorFlow to prepare (its PAN-X
  files read directly with the "iob2" source instead).
  """
  tfds = _tfds()
  kwargs = dict(builder_kwargs or {})
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record", **kwargs)
  if builder.is_prepared():
    return builder
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  download_dir = Path(builder.data_dir_root) / "downloads"
  try:
    if manual_dir:
      _pre_extract(manual_dir, download_dir)
      if trust_local_files:
        _trust_local_files(builder, manual_dir)
    builder.download_and_prepare(
        download_dir=str(download_dir), download_config=config, file_format="array_record"
    )
  except Exception as e:
    where = f"from manual_dir {manual_dir}" if manual_dir else "by download"
    raise SourceError(
        f"Could not prepare TFDS {name!r} {where} into "
        f"{builder.data_dir}: {type(e).__name__}: {e}"
    ) from e
  return builder


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _label_names(feature) -> Callable[[Any], str]:
  return lambda ids: [feature.int2str(int(i)) for i in ids]


def _token_converter(builder, tag_key: str) -> Callable[[Mapping], Example]:
  names = _label_names(builder.info.features[tag_key].feature)
  return lambda r: {"tokens": [_text(t) for t in r["tokens"]], "tags": names(r[tag_key])}


def _xnli_converter(builder, lang: str | None) -> Callable[[Mapping], Example]:
  languages = builder.info.features["premise"].languages
  if lang not in languages:
    raise SourceError(f"TFDS xnli needs a 'lang' among {sorted(languages)}, got {lang!r}.")
  label = builder.info.features["label"]

  def convert(r: Mapping) -> Example:
    hyp_langs = [_text(x) for x in r["hypothesis"]["language"]]
    return {
        "premise": _text(r["premise"][lang]),
        "hypothesis": _text(r["hypothesis"]["translation"][hyp_langs.index(lang)]),
        "label": label.int2str(int(r["label"])),
    }

  return convert


def _pair_converter(builder) -> Callable[[Mapping], Example]:
  """Datasets with plain `premise`, `hypothesis`, `label` features (MultiNLI: XNLI's training set)."""
  label = builder.info.features["label"]
  return lambda r: {
      "premise": _text(r["premise"]),
      "hypothesis": _text(r["hypothesis"]),
      "label": label.int2str(int(r["label"])),
  }


def _tfds_converter(name: str, builder, lang: str | None) -> Callable[[Mapping], Example]:
  family = name.split("/")[0].split(":")[0]
  if family in ("universal_dependencies", "xtreme_pos"):
    return _token_converter(builder, "upos")
  if family == "wikiann":
    return _token_converter(builder, "tags")
  if family == "xnli":
    return _xnli_converter(builder, lang)
  if family == "multi_nli":
    return _pair_converter(builder)
  raise SourceError(
      f"TFDS dataset {name!r}: no converter; known: "
      "['universal_dependencies/<treebank>', 'xtreme_pos/<config>', "
      "'wikiann/<lang>', 'xnli', 'multi_nli']"
  )


def read_tfds(
    name: str,
    split: str = "train",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    lang: str | None = None,
    builder_kwargs: Mapping | None = None,
    max_examples: int | None = None,
    trust_local_files: bool = True,
) -> list[Example]:
  """A TFDS split read through `tfds.data_source` (array_record, no TensorFlow).

  Prepares the dataset first when needed (see `prepare_tfds`). `lang` picks XNLI's language.
  """
  tfds = _tfds()
  builder = prepare_tfds(name, data_dir, manual_dir, builder_kwargs, trust_local_files)
  if split not in builder.info.splits:
    raise SourceError(
        f"TFDS {name!r} has no split {split!r}; splits: {sorted(builder.info.splits)}"
    )
  source = tfds.data_source(
      name, split=split, data_dir=data_dir, builder_kwargs=dict(builder_kwargs or {})
  )
  convert = _tfds_converter(name, builder, lang)
  n = len(source) if max_examples is None else min(len(source), max_examples)
  return [{**convert(source[i]), WHERE: f"tfds {name} {split}: row {i}"} for i in range(n)]


def _read_tfds_source(source: Mapping) -> list[Example]:
  return read_tfds(
      need(source, "name"),
      source.get("split", "train"),
      source.get("data_dir"),
      source.get("manual_dir"),
      source.get("lang"),
      source.get("builder_kwargs"),
      source.get("max_examples"),
      source.get("trust_local_files", True),
  )


FORMAT = Format(
    "tfds",
    _read_tfds_source,
    kinds=(PAIR, TOKEN),
    required=("name",),
    path_keys=("data_dir", "manual_dir"),
    modules=("tensorflow_datasets",),
    extra="tfds",
)
