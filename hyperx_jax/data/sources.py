"""Readers of raw examples: CoNLL-U, two-column IOB2, JSONL pairs, plain text, gettext .mo,
Hugging Face hub parquet files, TFDS.

Every reader returns a list of plain dicts, one per example:

  token tasks (POS, NER)  {"tokens": [str, ...], "tags": [str, ...], "where": str}
  sentence pairs (XNLI)   {"premise": str, "hypothesis": str, "label": str | int, "where": str}
  raw text (MLM)          {"text": str, "where": str}

`where` says where the example came from, as every message about it starts: `file:line` for
text files (the sentence's first line), `file: row N` for parquet (N counted from 0). Token
examples of CoNLL-U and IOB2 files also carry `lines`, the line of each word (`word_where`).

`read_source(config)` is the one entry point the pipeline calls; its config dict names the
reader in `"type"` (see `SOURCE_TYPES`). Bad input fails with the file, the line number and
the offending line.
"""

from __future__ import annotations

import gettext
import glob
import json
import logging
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hyperx_jax.schema import HF_CLASS_LABELS, HF_NO_LABEL, IOB2_MODES, UPOS_TAGS

Example = dict[str, Any]
WHERE = "where"
LINES = "lines"


def word_where(example: Example, i: int) -> str:
  """Where word i of a token example is: `file:line: word i+1` (or `file: row N: word i+1`)."""
  if LINES in example:
    path = example[WHERE].rsplit(":", 1)[0]
    return f"{path}:{example[LINES][i]}: word {i + 1}"
  return f"{example.get(WHERE, '?')}: word {i + 1}"


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


def _conllu_id(path, number: int, line: str, token_id: str) -> tuple[int, int | None, str]:
  """(first, last, kind) of a CoNLL-U ID: a word `3`, a multiword range `3-4`, an empty node `3.1`."""
  if "-" in token_id or "." in token_id:
    kind = "range" if "-" in token_id else "empty"
    lo, _, hi = token_id.replace(".", "-").partition("-")
    if not (lo.isdigit() and hi.isdigit()):
      raise bad_line(path, number, line, "an ID like 3, 3-4 or 3.1")
    return int(lo), int(hi), kind
  if not token_id.isdigit():
    raise bad_line(path, number, line, "an integer word ID in column 1")
  return int(token_id), None, "word"


def _conllu_sentence(path, block: list[tuple[int, str]]) -> Example | None:
  """{"tokens", "tags", "where"} of one sentence; word IDs must run 1, 2, 3, ...; a range
  `a-b` must start at the next word and cover words that follow; an empty node `k.m` must
  follow word k."""
  tokens, tags, lines, range_end = [], [], [], (0, 0)
  for number, line in block:
    if line.startswith("#"):
      continue
    cols = line.split("\t")
    if len(cols) != CONLLU_COLUMNS:
      raise bad_line(path, number, line,
                      f"{CONLLU_COLUMNS} tab-separated columns (found {len(cols)})")
    expected = len(tokens) + 1
    lo, hi, kind = _conllu_id(path, number, line, cols[0])
    if kind == "range":
      if lo != expected or hi <= lo:
        raise bad_line(path, number, line, f"a multiword range starting at word {expected} "
                        f"(like {expected}-{expected + 1})")
      range_end = (hi, number)
      continue
    if kind == "empty":
      if lo != expected - 1:
        raise bad_line(path, number, line, f"an empty node after word {expected - 1} "
                        f"(like {expected - 1}.1)")
      continue
    if lo != expected:
      raise bad_line(path, number, line,
                      f"word ID {expected} (IDs run 1, 2, 3, ... in each sentence)")
    if not cols[1] or not cols[UPOS_COLUMN]:
      raise bad_line(path, number, line, "a FORM and a UPOS")
    lines.append(number)
    tokens.append(cols[1])
    tags.append(cols[UPOS_COLUMN])
  if range_end[0] > len(tokens):
    raise SourceError(f"{path}:{range_end[1]}: multiword range ends at word {range_end[0]} but "
                      f"the sentence has {len(tokens)} words")
  if not tokens:
    return None
  return {"tokens": tokens, "tags": tags, WHERE: f"{path}:{lines[0]}", LINES: lines}


def read_conllu(path: str | os.PathLike) -> list[Example]:
  """Sentences of a CoNLL-U file as {"tokens", "tags"} (UPOS column).

  Multi-word token lines (`1-2`) and empty nodes (`1.1`) are skipped; the syntactic words
  they cover are kept.
  """
  sentences = (_conllu_sentence(path, block) for block in blocks(read_lines(path)))
  return [s for s in sentences if s is not None]


# ---------------------------------------------------------------- IOB2


def _separator(lines: list[str]) -> tuple[str, int]:
  """The file's column separator (a tab, else spaces) and the line that set it."""
  number, line = next((n, l) for n, l in enumerate(lines, start=1) if l.strip())
  return ("\t" if "\t" in line else " "), number


def _iob2_pair(path, number: int, line: str, separator: tuple[str, int]) -> tuple[str, str]:
  sep, first = separator
  mixed = ("\t" in line) != (sep == "\t")
  cols = line.split("\t") if sep == "\t" else line.split()
  if mixed or len(cols) != 2 or not cols[0] or not cols[1]:
    name = "a tab" if sep == "\t" else "spaces"
    raise bad_line(path, number, line, f"two columns: token and IOB2 tag, separated by {name} "
                    f"as on line {first} (one separator per file)")
  return cols[0], cols[1]


def repair_iob2(examples: list[Example], mode: str, what: str) -> list[Example]:
  """IOB2 starts every entity with B-X. An I-X after O, or after a tag of another type, is
  rewritten as B-X and counted (`mode='repair'`, logged) or refused (`mode='strict'`)."""
  if mode not in IOB2_MODES:
    raise SourceError(f"{what}: iob2={mode!r}; expected one of {list(IOB2_MODES)}")
  out, repaired, first = [], 0, None
  for ex in examples:
    tags, previous = list(ex["tags"]), "O"
    for i, tag in enumerate(tags):
      if isinstance(tag, str) and tag.startswith("I-") and previous[2:] != tag[2:]:
        if mode == "strict":
          raise SourceError(f"{word_where(ex, i)} {ex['tokens'][i]!r}: {tag} follows "
                            f"{previous!r}; IOB2 begins an entity with B-{tag[2:]} "
                            "(iob2='repair' rewrites it)")
        tags[i] = "B-" + tag[2:]
        repaired += 1
        first = first or word_where(ex, i)
      previous = tags[i] if isinstance(tags[i], str) else "O"
    out.append({**ex, "tags": tags})
  if repaired:
    logging.warning("%s: %d I-X tags that began an entity became B-X (iob2='repair'); first "
                    "at %s", what, repaired, first)
  return out


def strip_language_prefix(tokens: list[str]) -> list[str]:
  """Drops PAN-X's `lang:` prefix when every token of the sentence has the same one."""
  langs = {t.partition(":")[0] for t in tokens}
  lang = langs.pop() if len(langs) == 1 else ""
  if not (2 <= len(lang) <= 3 and lang.isalpha() and lang.islower()):
    return tokens
  if not all(len(t) > len(lang) + 1 and t[len(lang)] == ":" for t in tokens):
    return tokens
  return [t[len(lang) + 1:] for t in tokens]


def read_iob2(path: str | os.PathLike, iob2: str = "repair") -> list[Example]:
  """Two-column token / IOB2-tag files, a blank line between sentences; the columns are
  separated by a tab or by spaces, the same in the whole file. An I-X that begins an entity
  is repaired or refused as `iob2` says (see `repair_iob2`).

  Tokens may carry a language prefix as in XTREME's PAN-X files (`tr:İstanbul`); it is
  removed when all tokens of a sentence carry the same one.
  """
  lines = read_lines(path)
  separator = _separator(lines)
  examples = []
  for block in blocks(lines):
    pairs = [_iob2_pair(path, n, line, separator) for n, line in block]
    examples.append({"tokens": strip_language_prefix([p[0] for p in pairs]),
                     "tags": [p[1] for p in pairs], WHERE: f"{path}:{block[0][0]}",
                     LINES: [n for n, _ in block]})
  return repair_iob2(examples, iob2, str(path))


# ---------------------------------------------------------------- JSONL pairs, text


PAIR_FIELDS = ("premise", "hypothesis", "label")
# The field names of the official MultiNLI / XNLI JSON lines files, read as PAIR_FIELDS.
NLI_FIELDS = ("sentence1", "sentence2", "gold_label")
NO_GOLD_LABEL = "-"  # MultiNLI: annotators reached no consensus (the row is skipped)


def json_row(path, number: int, line: str) -> Any:
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise bad_line(path, number, line, f"a JSON object ({e.msg})") from e


def read_jsonl_pairs(path: str | os.PathLike, fields: Mapping[str, str] | None = None,
                     language: str | None = None) -> list[Example]:
  """JSON lines of sentence pairs; the label is a name or an int id.

  Field names: `fields` maps premise / hypothesis / label to the file's names; without it a
  file whose first row has "premise" is read as PAIR_FIELDS and one with "sentence1" as the
  official MultiNLI / XNLI names (NLI_FIELDS). `language` keeps the rows whose "language" is
  that (the official XNLI files hold every language). Rows labelled "-" are skipped, counted.
  """
  rows = [(n, line, json_row(path, n, line))
          for n, line in enumerate(read_lines(path), start=1) if line.strip()]
  if fields is not None:
    names = tuple(fields[k] for k in PAIR_FIELDS)
  else:
    first = rows[0][2]
    names = NLI_FIELDS if isinstance(first, dict) and "sentence1" in first else PAIR_FIELDS
  examples, unlabelled = [], 0
  for number, line, row in rows:
    if not isinstance(row, dict) or not all(k in row for k in names):
      raise bad_line(path, number, line, f"an object with keys {list(names)} (the source's "
                      '"fields" maps premise / hypothesis / label to other names)')
    if language is not None and row.get("language") != language:
      continue
    premise, hypothesis, label = (row[k] for k in names)
    if label == NO_GOLD_LABEL:
      unlabelled += 1
      continue
    if not isinstance(label, (str, int)) or isinstance(label, bool):
      raise bad_line(path, number, line, "a label that is a name or an int")
    examples.append({"premise": premise, "hypothesis": hypothesis, "label": label,
                     WHERE: f"{path}:{number}"})
  if unlabelled:
    logging.info("%s: skipped %d rows without a gold label (%r)", path, unlabelled,
                 NO_GOLD_LABEL)
  return examples


def read_text(path: str | os.PathLike) -> list[Example]:
  """Plain text, one sentence per line (blank lines skipped), as {"text"}."""
  return [{"text": line.strip(), WHERE: f"{path}:{n}"}
          for n, line in enumerate(read_lines(path), start=1) if line.strip()]


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


# ---------------------------------------------------------------- Hugging Face hub parquet


def hub_pattern(config: str | None, split: str) -> str:
  """Where a split's parquet files sit in a hub dataset repository (and in a local copy):
  `<config>/<split>-*.parquet`, or `data/<split>-*.parquet` for a dataset without configs."""
  return f"{config or 'data'}/{split}-*.parquet"


def _hub_snapshot(repo: str, revision: str, pattern: str, cache_dir: str | None) -> Path:
  """The local folder holding `pattern`'s files of `repo` at `revision` (downloaded once into
  the Hugging Face cache; with HF_HUB_OFFLINE=1 only the cache is read)."""
  from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
  try:
    return Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=revision,
                                  allow_patterns=[pattern], cache_dir=cache_dir))
  except Exception as e:
    raise SourceError(f"hub dataset {repo}@{revision} ({pattern}): could not download: "
                      f"{type(e).__name__}: {e}") from e


def parquet_files(source: Mapping) -> list[Path]:
  """The parquet files of an `hf_parquet` source: `path` (a file, or a local copy of the
  repository) or the hub's `repo` at a pinned `revision`; `files` overrides the pattern."""
  pattern = source.get("files") or hub_pattern(source.get("config"), source.get("split", "train"))
  if source.get("path") is not None:
    root = Path(source["path"]).expanduser()
    if root.is_file():
      return [root]
    where = str(root)
  else:
    repo, revision = _need(source, "repo"), _need(source, "revision")
    root = _hub_snapshot(repo, revision, pattern, source.get("cache_dir"))
    where = f"hub dataset {repo}@{revision} ({root})"
  files = sorted(root.glob(pattern))
  if not files:
    raise SourceError(f"{where}: no files match {pattern!r}.")
  return files


def _class_names(schema, column: str) -> tuple[str, ...]:
  """The names of a class-id column: from the file's `huggingface` metadata (the dataset's
  ClassLabel feature) when it has them, else schema.HF_CLASS_LABELS."""
  meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
  feature = meta.get("info", {}).get("features", {}).get(column)
  while isinstance(feature, dict):
    if "names" in feature:
      return tuple(feature["names"])
    feature = feature.get("feature")
  return HF_CLASS_LABELS[column]


def _check_column(file: Path, schema, column: str, kinds: tuple[str, ...], expected: str):
  """`column` holds values of one of `kinds` ('string', 'int'), in lists if `expected` says
  `list<...>`; else an error naming the file, the column and both types."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  is_kind = {"string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
             "int": pa.types.is_integer}
  t = schema.field(column).type
  if expected.startswith("list"):
    t = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else None
  if t is None or not any(is_kind[k](t) for k in kinds):
    raise SourceError(f"{file}: column {column!r} has type {schema.field(column).type}, "
                      f"expected {expected}.")


def _names_of(file: Path, row: int, column: str, values: list, names: tuple[str, ...]) -> list:
  """Class ids -> names (names pass through); an id outside `names` is an error."""
  out = []
  for v in values:
    if isinstance(v, str):
      out.append(v)
    elif 0 <= v < len(names):
      out.append(names[v])
    else:
      raise SourceError(f"{file}: row {row}: {column} id {v} is outside the {len(names)} "
                        f"classes {list(names)}.")
  return out


def _parquet_tokens(file: Path, schema, tag_column: str) -> list[Example]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  _check_column(file, schema, "tokens", ("string",), "list<string>")
  _check_column(file, schema, tag_column, ("int", "string"), "list<int64> class ids")
  names = _class_names(schema, tag_column)
  cols = pq.read_table(file, columns=["tokens", tag_column]).to_pydict()
  examples = []
  for i, (tokens, tags) in enumerate(zip(cols["tokens"], cols[tag_column])):
    if tokens is None or tags is None or None in tags:
      raise SourceError(f"{file}: row {i}: null tokens or {tag_column}.")
    examples.append({"tokens": tokens, "tags": _names_of(file, i, tag_column, tags, names),
                     WHERE: f"{file}: row {i}"})
  return examples


def _parquet_pairs(file: Path, schema) -> list[Example]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  for column in ("premise", "hypothesis"):
    _check_column(file, schema, column, ("string",), "string")
  _check_column(file, schema, "label", ("int", "string"), "int64 class ids")
  names = _class_names(schema, "label")
  cols = pq.read_table(file, columns=list(PAIR_FIELDS)).to_pydict()
  examples, unlabelled = [], 0
  for i, (premise, hypothesis, label) in enumerate(zip(*(cols[k] for k in PAIR_FIELDS))):
    if premise is None or hypothesis is None or label is None:
      raise SourceError(f"{file}: row {i}: null premise, hypothesis or label.")
    if label == HF_NO_LABEL:
      unlabelled += 1
      continue
    examples.append({"premise": premise, "hypothesis": hypothesis,
                     "label": _names_of(file, i, "label", [label], names)[0],
                     WHERE: f"{file}: row {i}"})
  if unlabelled:
    logging.info("%s: skipped %d rows without a gold label (%d)", file, unlabelled, HF_NO_LABEL)
  return examples


def read_parquet(file: Path, iob2: str = "repair") -> list[Example]:
  """One hub parquet file, by its columns: `tokens` with `ner_tags` (IOB2, repaired or refused
  as `iob2` says) or `pos_tags`, or `premise`, `hypothesis`, `label`. Class ids become names."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  schema = pq.read_schema(file)
  columns = set(schema.names)
  if "tokens" in columns and "ner_tags" in columns:
    return repair_iob2(_parquet_tokens(file, schema, "ner_tags"), iob2, str(file))
  if "tokens" in columns and "pos_tags" in columns:
    return _parquet_tokens(file, schema, "pos_tags")
  if set(PAIR_FIELDS) <= columns:
    return _parquet_pairs(file, schema)
  raise SourceError(f"{file}: columns {sorted(columns)}; expected tokens + ner_tags (PAN-X), "
                    "tokens + pos_tags (UD-POS) or premise + hypothesis + label (XNLI).")


def read_hf_parquet(source: Mapping) -> list[Example]:
  """Every parquet file of an `hf_parquet` source, in file order (see `parquet_files`)."""
  return [ex for file in parquet_files(source)
          for ex in read_parquet(file, source.get("iob2", "repair"))]


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
  return [{**convert(source[i]), WHERE: f"tfds {name} {split}: row {i}"} for i in range(n)]


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
  lang, locale_dir = _need(source, "lang"), source.get("locale_dir", LOCALE_DIR)
  texts = mo_sentences(lang, source.get("min_chars", 20), source.get("limit"), locale_dir)
  return [{"text": t, WHERE: f"{locale_dir}/{lang}: string {i}"} for i, t in enumerate(texts)]


def _read_tfds_source(source: Mapping) -> list[Example]:
  return read_tfds(_need(source, "name"), source.get("split", "train"), source.get("data_dir"),
                   source.get("manual_dir"), source.get("lang"),
                   source.get("builder_kwargs"), source.get("max_examples"),
                   source.get("trust_local_files", True))


READERS: dict[str, Callable[[Mapping], list[Example]]] = {
    "conllu": lambda s: read_conllu(_need(s, "path")),
    "iob2": lambda s: read_iob2(_need(s, "path"), s.get("iob2", "repair")),
    "jsonl": lambda s: read_jsonl_pairs(_need(s, "path"), s.get("fields"), s.get("language")),
    "text": lambda s: read_text(_need(s, "path")),
    "mo": _read_mo,
    "hf_parquet": read_hf_parquet,
    "tfds": _read_tfds_source,
}
SOURCE_TYPES = tuple(READERS)


def read_source(source: Mapping) -> list[Example]:
  """Raw examples of one source config, e.g. `{"type": "conllu", "path": ...}`.

  Keys: `type` (one of `SOURCE_TYPES`), the reader's own (`path`; `iob2` for iob2 and
  hf_parquet; `fields`, `language` for jsonl; `lang` for mo; `repo`, `config`, `split`,
  `revision`, `cache_dir`, `files` or a local `path` for hf_parquet; `name`, `split`,
  `data_dir`, `manual_dir`, `lang`, `builder_kwargs` for tfds), and optionally `tag_map` (a
  dict or "google_universal_to_upos") and `max_examples`.
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
