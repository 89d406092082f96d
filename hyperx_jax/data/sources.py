"""Readers of raw examples: CoNLL-U, two-column IOB2, JSONL pairs, plain text, gettext .mo, TFDS.

Every reader returns a list of plain dicts, one per example:

  token tasks (POS, NER)  {"tokens": [str, ...], "tags": [str, ...]}
  sentence pairs (XNLI)   {"premise": str, "hypothesis": str, "label": str | int}
  raw text (MLM)          {"text": str}

`read_source(config)` is the one entry point the pipeline calls; its config dict names the
reader in `"type"` (see `SOURCE_TYPES`). Bad input fails with the file, the line number and
the offending line.
"""

from __future__ import annotations

import gettext
import glob
import json
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hyperx_jax.schema import UPOS_TAGS

Example = dict[str, Any]


# Google universal tagset (Petrov et al. 2012, as in older treebanks) -> UPOS; any tag
# outside UPOS after this map becomes X.
GOOGLE_UNIVERSAL_TO_UPOS = {"CONJ": "CCONJ", "PRT": "PART", "ONOM": "INTJ"}
TAG_MAPS = {"google_universal_to_upos": GOOGLE_UNIVERSAL_TO_UPOS}

# Language -> the UD treebank (a config of TFDS `universal_dependencies`) used for POS.
UD_TREEBANKS = {
    "en": "en_ewt", "ar": "ar_padt", "zh": "zh_gsd", "tr": "tr_imst", "kk": "kk_ktb",
    "ta": "ta_ttb", "yue": "yue_hk", "br": "br_keb", "is": "is_modern", "tl": "tl_trg",
    "yo": "yo_ytb", "fo": "fo_oft", "ug": "ug_udt", "mt": "mt_mudt", "sa": "sa_ufal",
    "hsb": "hsb_ufal", "gn": "gn_oldtudet", "ja": "ja_gsd", "de": "de_gsd", "fr": "fr_gsd",
    "es": "es_gsd", "ru": "ru_gsd", "hi": "hi_hdtb", "ko": "ko_gsd", "fi": "fi_tdt",
    "th": "th_pud", "vi": "vi_vtb", "he": "he_htb", "id": "id_gsd", "it": "it_isdt",
}

LOCALE_DIR = "/usr/share/locale"

CONLLU_COLUMNS = 10
UPOS_COLUMN = 3


class SourceError(ValueError):
  """Bad or missing input data; the message names the file and line."""


# ---------------------------------------------------------------- files


def read_lines(path: str | os.PathLike) -> list[str]:
  """All lines of a UTF-8 text file; a missing or empty file is an error."""
  path = Path(path).expanduser()
  if not path.is_file():
    raise SourceError(f"{path}: no such file.")
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  if not any(line.strip() for line in lines):
    raise SourceError(f"{path}: file is empty.")
  return lines


def blocks(lines: list[str]) -> Iterator[list[tuple[int, str]]]:
  """Blank-line separated blocks of (1-based line number, line)."""
  block: list[tuple[int, str]] = []
  for number, line in enumerate(lines, start=1):
    if line.strip():
      block.append((number, line))
    elif block:
      yield block
      block = []
  if block:
    yield block


def bad_line(path, number: int, line: str, expected: str) -> SourceError:
  return SourceError(f"{path}:{number}: expected {expected}, got {line!r}")


# ---------------------------------------------------------------- CoNLL-U


def _conllu_word(path, number: int, line: str) -> tuple[str, str] | None:
  """(form, UPOS) of one CoNLL-U word line; None for ranges (1-2) and empty nodes (1.1)."""
  cols = line.split("\t")
  if len(cols) != CONLLU_COLUMNS:
    raise bad_line(path, number, line,
                    f"{CONLLU_COLUMNS} tab-separated columns (found {len(cols)})")
  token_id = cols[0]
  if "-" in token_id or "." in token_id:
    lo, sep, hi = token_id.replace(".", "-").partition("-")
    if not (lo.isdigit() and hi.isdigit()):
      raise bad_line(path, number, line, "an ID like 3, 3-4 or 3.1")
    return None
  if not token_id.isdigit():
    raise bad_line(path, number, line, "an integer word ID in column 1")
  if not cols[1] or not cols[UPOS_COLUMN]:
    raise bad_line(path, number, line, "a FORM and a UPOS")
  return cols[1], cols[UPOS_COLUMN]


def read_conllu(path: str | os.PathLike) -> list[Example]:
  """Sentences of a CoNLL-U file as {"tokens", "tags"} (UPOS column).

  Multi-word token lines (`1-2`) and empty nodes (`1.1`) are skipped; the syntactic words
  they cover are kept.
  """
  examples = []
  for block in blocks(read_lines(path)):
    words = [_conllu_word(path, n, line) for n, line in block if not line.startswith("#")]
    words = [w for w in words if w is not None]
    if words:
      examples.append({"tokens": [w[0] for w in words], "tags": [w[1] for w in words]})
  return examples


# ---------------------------------------------------------------- IOB2


def _iob2_pair(path, number: int, line: str) -> tuple[str, str]:
  cols = line.split("\t") if "\t" in line else line.split()
  if len(cols) != 2 or not cols[0] or not cols[1]:
    raise bad_line(path, number, line, "two columns: token and IOB2 tag")
  return cols[0], cols[1]


def strip_language_prefix(tokens: list[str]) -> list[str]:
  """Drops PAN-X's `lang:` prefix when every token of the sentence has the same one."""
  langs = {t.partition(":")[0] for t in tokens}
  lang = langs.pop() if len(langs) == 1 else ""
  if not (2 <= len(lang) <= 3 and lang.isalpha() and lang.islower()):
    return tokens
  if not all(len(t) > len(lang) + 1 and t[len(lang)] == ":" for t in tokens):
    return tokens
  return [t[len(lang) + 1:] for t in tokens]


def read_iob2(path: str | os.PathLike) -> list[Example]:
  """Two-column token / IOB2-tag files, a blank line between sentences.

  Tokens may carry a language prefix as in XTREME's PAN-X files (`tr:İstanbul`); it is
  removed when all tokens of a sentence carry the same one.
  """
  examples = []
  for block in blocks(read_lines(path)):
    pairs = [_iob2_pair(path, n, line) for n, line in block]
    examples.append({"tokens": strip_language_prefix([p[0] for p in pairs]),
                     "tags": [p[1] for p in pairs]})
  return examples


# ---------------------------------------------------------------- JSONL pairs, text


def read_jsonl_pairs(path: str | os.PathLike) -> list[Example]:
  """JSON lines {"premise", "hypothesis", "label"}; label is a name or an int id."""
  examples = []
  for number, line in enumerate(read_lines(path), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise bad_line(path, number, line, f"a JSON object ({e.msg})") from e
    if not isinstance(row, dict) or not all(k in row for k in ("premise", "hypothesis", "label")):
      raise bad_line(path, number, line,
                      'an object with keys "premise", "hypothesis", "label"')
    if not isinstance(row["label"], (str, int)) or isinstance(row["label"], bool):
      raise bad_line(path, number, line, "a label that is a name or an int")
    examples.append({k: row[k] for k in ("premise", "hypothesis", "label")})
  return examples


def read_text(path: str | os.PathLike) -> list[Example]:
  """Plain text, one sentence per line (blank lines skipped), as {"text"}."""
  return [{"text": line.strip()} for line in read_lines(path) if line.strip()]


# ---------------------------------------------------------------- gettext catalogues


def _mo_catalogues(lang: str, locale_dir: str) -> list[dict]:
  files = sorted(glob.glob(os.path.join(locale_dir, lang, "LC_MESSAGES", "*.mo")))
  if not files:
    known = sorted(d for d in os.listdir(locale_dir)) if os.path.isdir(locale_dir) else []
    raise SourceError(f"No .mo catalogues for locale {lang!r} in "
                      f"{locale_dir}/{lang}/LC_MESSAGES; locales there: {known}")
  catalogues = []
  for name in files:
    with open(name, "rb") as f:
      try:
        catalogues.append(gettext.GNUTranslations(f)._catalog)  # msgid -> msgstr
      except (OSError, UnicodeDecodeError):
        continue  # A broken or non-UTF-8 catalogue contributes nothing.
  return catalogues


def _mo_entries(lang: str, locale_dir: str) -> Iterator[tuple[str, str]]:
  """(english msgid, translation) of every catalogue, files and ids in sorted order."""
  for catalogue in _mo_catalogues(lang, locale_dir):
    singular = {k: v for k, v in catalogue.items() if isinstance(k, str) and k}
    for key in sorted(singular):
      english = key.split("\x04", 1)[-1]  # drop a msgctxt prefix ("context\x04msgid")
      yield " ".join(english.split()), " ".join(str(singular[key]).split())


def _dedup(items: Iterable, key: Callable = lambda x: x, limit: int | None = None) -> list:
  seen, out = set(), []
  for item in items:
    if key(item) not in seen:
      seen.add(key(item))
      out.append(item)
      if limit is not None and len(out) >= limit:
        break
  return out


def mo_sentences(lang: str, min_chars: int = 20, limit: int | None = None,
                 locale_dir: str = LOCALE_DIR) -> list[str]:
  """Translated strings of a locale's gettext catalogues longer than `min_chars`
  (strings left untranslated, i.e. still English, are left out).

  Deduplicated, in a deterministic order (catalogue file name, then msgid). Read at run
  time only (GPL/LGPL text).
  """
  texts = (t for e, t in _mo_entries(lang, locale_dir) if len(t) > min_chars and t != e)
  return _dedup(texts, limit=limit)


def mo_parallel(lang: str, min_chars: int = 20, limit: int | None = None,
                locale_dir: str = LOCALE_DIR) -> list[tuple[str, str]]:
  """(english, translation) pairs of a locale's catalogues; untranslated ones left out."""
  pairs = ((e, t) for e, t in _mo_entries(lang, locale_dir)
           if len(e) > min_chars and len(t) > min_chars and e != t)
  return _dedup(pairs, key=lambda p: p[1], limit=limit)


# ---------------------------------------------------------------- TFDS


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


def prepare_tfds(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                 builder_kwargs: Mapping | None = None, trust_local_files: bool = True):
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
    builder.download_and_prepare(download_dir=str(download_dir), download_config=config,
                                 file_format="array_record")
  except Exception as e:
    where = f"from manual_dir {manual_dir}" if manual_dir else "by download"
    raise SourceError(f"Could not prepare TFDS {name!r} {where} into "
                      f"{builder.data_dir}: {type(e).__name__}: {e}") from e
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
    return {"premise": _text(r["premise"][lang]),
            "hypothesis": _text(r["hypothesis"]["translation"][hyp_langs.index(lang)]),
            "label": label.int2str(int(r["label"]))}

  return convert


def _pair_converter(builder) -> Callable[[Mapping], Example]:
  """Datasets with plain `premise`, `hypothesis`, `label` features (MultiNLI: XNLI's training set)."""
  label = builder.info.features["label"]
  return lambda r: {"premise": _text(r["premise"]), "hypothesis": _text(r["hypothesis"]),
                    "label": label.int2str(int(r["label"]))}


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
  raise SourceError(f"TFDS dataset {name!r}: no converter; known: "
                    "['universal_dependencies/<treebank>', 'xtreme_pos/<config>', "
                    "'wikiann/<lang>', 'xnli', 'multi_nli']")


def read_tfds(name: str, split: str = "train", data_dir: str | None = None,
              manual_dir: str | None = None, lang: str | None = None,
              builder_kwargs: Mapping | None = None, max_examples: int | None = None,
              trust_local_files: bool = True) -> list[Example]:
  """A TFDS split read through `tfds.data_source` (array_record, no TensorFlow).

  Prepares the dataset first when needed (see `prepare_tfds`). `lang` picks XNLI's language.
  """
  tfds = _tfds()
  builder = prepare_tfds(name, data_dir, manual_dir, builder_kwargs, trust_local_files)
  if split not in builder.info.splits:
    raise SourceError(f"TFDS {name!r} has no split {split!r}; splits: "
                      f"{sorted(builder.info.splits)}")
  source = tfds.data_source(name, split=split, data_dir=data_dir,
                            builder_kwargs=dict(builder_kwargs or {}))
  convert = _tfds_converter(name, builder, lang)
  n = len(source) if max_examples is None else min(len(source), max_examples)
  return [convert(source[i]) for i in range(n)]


# ---------------------------------------------------------------- tag maps, entry point


def resolve_tag_map(tag_map: str | Mapping[str, str] | None) -> Callable[[str], str] | None:
  """A tag-mapping function from a dict or a known name (see `TAG_MAPS`)."""
  if tag_map is None:
    return None
  if isinstance(tag_map, str):
    if tag_map not in TAG_MAPS:
      raise SourceError(f"Unknown tag_map {tag_map!r}; known: {sorted(TAG_MAPS)}")
    table = TAG_MAPS[tag_map]
    return lambda tag: (t if (t := table.get(tag, tag)) in UPOS_TAGS else "X")
  table = dict(tag_map)
  return lambda tag: table.get(tag, tag)


def apply_tag_map(examples: list[Example], tag_map) -> list[Example]:
  mapping = resolve_tag_map(tag_map)
  if mapping is None:
    return examples
  return [{**ex, "tags": [mapping(t) for t in ex["tags"]]} for ex in examples]


def _need(source: Mapping, key: str):
  if source.get(key) is None:
    raise SourceError(f"Source {dict(source)} of type {source['type']!r} needs a {key!r}.")
  return source[key]


def _read_mo(source: Mapping) -> list[Example]:
  texts = mo_sentences(_need(source, "lang"), source.get("min_chars", 20), source.get("limit"),
                       source.get("locale_dir", LOCALE_DIR))
  return [{"text": t} for t in texts]


def _read_tfds_source(source: Mapping) -> list[Example]:
  return read_tfds(_need(source, "name"), source.get("split", "train"), source.get("data_dir"),
                   source.get("manual_dir"), source.get("lang"),
                   source.get("builder_kwargs"), source.get("max_examples"),
                   source.get("trust_local_files", True))


READERS: dict[str, Callable[[Mapping], list[Example]]] = {
    "conllu": lambda s: read_conllu(_need(s, "path")),
    "iob2": lambda s: read_iob2(_need(s, "path")),
    "jsonl": lambda s: read_jsonl_pairs(_need(s, "path")),
    "text": lambda s: read_text(_need(s, "path")),
    "mo": _read_mo,
    "tfds": _read_tfds_source,
}
SOURCE_TYPES = tuple(READERS)


def read_source(source: Mapping) -> list[Example]:
  """Raw examples of one source config, e.g. `{"type": "conllu", "path": ...}`.

  Keys: `type` (one of `SOURCE_TYPES`), the reader's own (`path`; `lang` for mo;
  `name`, `split`, `data_dir`, `manual_dir`, `lang`, `builder_kwargs` for tfds), and
  optionally `tag_map` (a dict or "google_universal_to_upos") and `max_examples`.
  """
  kind = source.get("type")
  if kind not in READERS:
    raise SourceError(f"Unknown source type {kind!r} in {dict(source)}; "
                      f"known: {list(SOURCE_TYPES)}")
  examples = READERS[kind](source)
  if not examples:
    raise SourceError(f"Source {dict(source)} yielded no examples.")
  if source.get("max_examples") is not None:
    examples = examples[:source["max_examples"]]
  return apply_tag_map(examples, source.get("tag_map"))
