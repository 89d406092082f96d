"""gettext catalogues (`/usr/share/locale/<lang>/LC_MESSAGES/*.mo`): translated strings as
masked-LM text, and (English, translation) pairs. Read at run time only (GPL/LGPL text)."""

from __future__ import annotations

import gettext
import glob
import os
from collections.abc import Callable, Iterable, Iterator, Mapping

from hyperx_jax.config.vocabulary import MLM
from hyperx_jax.data.sources.base import WHERE, Example, Format, SourceError, need

LOCALE_DIR = "/usr/share/locale"


def _mo_catalogues(lang: str, locale_dir: str) -> list[dict]:
  files = sorted(glob.glob(os.path.join(locale_dir, lang, "LC_MESSAGES", "*.mo")))
  if not files:
    known = sorted(d for d in os.listdir(locale_dir)) if os.path.isdir(locale_dir) else []
    raise SourceError(
        f"No .mo catalogues for locale {lang!r} in "
        f"{locale_dir}/{lang}/LC_MESSAGES; locales there: {known}"
    )
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


def mo_sentences(
    lang: str, min_chars: int = 20, limit: int | None = None, locale_dir: str = LOCALE_DIR
) -> list[str]:
  """Translated strings of a locale's gettext catalogues longer than `min_chars`
  (strings left untranslated, i.e. still English, are left out).

  Deduplicated, in a deterministic order (catalogue file name, then msgid). Read at run
  time only (GPL/LGPL text).
  """
  texts = (t for e, t in _mo_entries(lang, locale_dir) if len(t) > min_chars and t != e)
  return _dedup(texts, limit=limit)


def mo_parallel(
    lang: str, min_chars: int = 20, limit: int | None = None, locale_dir: str = LOCALE_DIR
) -> list[tuple[str, str]]:
  """(english, translation) pairs of a locale's catalogues; untranslated ones left out."""
  pairs = (
      (e, t)
      for e, t in _mo_entries(lang, locale_dir)
      if len(e) > min_chars and len(t) > min_chars and e != t
  )
  return _dedup(pairs, key=lambda p: p[1], limit=limit)


def _read_mo(source: Mapping) -> list[Example]:
  lang, locale_dir = need(source, "lang"), source.get("locale_dir", LOCALE_DIR)
  texts = mo_sentences(lang, source.get("min_chars", 20), source.get("limit"), locale_dir)
  return [{"text": t, WHERE: f"{locale_dir}/{lang}: string {i}"} for i, t in enumerate(texts)]


FORMAT = Format("mo", _read_mo, kinds=(MLM,), required=("lang",), path_keys=("locale_dir",))
