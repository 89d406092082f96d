"""The Hugging Face fast tokenizer of the backbone, from a local directory or a hub id.

XLM-R special tokens: `<s>` = 0, `<pad>` = 1, `</s>` = 2, `<unk>` = 3, `<mask>` = last id.
"""

from __future__ import annotations

import os
from pathlib import Path

import transformers

# XLM-R's special tokens; a directory holding only `tokenizer.json` carries no
# special-tokens map, so they are declared here when the vocabulary has them.
XLMR_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}

# Files that make a directory a loadable tokenizer, in the order they are tried.
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model")


def _local_dir(name_or_dir: str | os.PathLike) -> Path | None:
  path = Path(name_or_dir).expanduser()
  if not path.is_dir():
    return None
  if not any((path / f).is_file() for f in TOKENIZER_FILES):
    raise FileNotFoundError(
        f"Tokenizer directory {path} holds none of {list(TOKENIZER_FILES)}; "
        f"it has {sorted(p.name for p in path.iterdir())[:20]}."
    )
  return path


def _sentencepiece_only(path: Path) -> bool:
  return not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def load_tokenizer(name_or_dir: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
  """Loads a fast tokenizer: a local directory first, else a hub id.

  Args:
    name_or_dir: a directory holding `tokenizer.json` or
      `sentencepiece.bpe.model`, or a Hugging Face hub id such as
      `FacebookAI/xlm-roberta-base`.

  Returns:
    A `PreTrainedTokenizerFast` (word-level alignment via `word_ids()` needs it).
  """
  local = _local_dir(name_or_dir)
  source = str(local) if local is not None else str(name_or_dir)
  try:
    if local is not None and _sentencepiece_only(local):
      # No tokenizer.json / tokenizer_config.json names a class: it is XLM-R's model
      # (converted to a fast tokenizer; needs the `sentencepiece` package).
      tok = transformers.XLMRobertaTokenizer.from_pretrained(source, local_files_only=True)
    else:
      tok = transformers.AutoTokenizer.from_pretrained(
          source, use_fast=True, local_files_only=local is not None
      )
  except (OSError, ValueError, ImportError) as e:
    where = (
        f"local directory {local}"
        if local is not None
        else f"hub id {name_or_dir!r} (not a local directory; looked for "
        f"{Path(name_or_dir).expanduser()} holding one of "
        f"{list(TOKENIZER_FILES)})"
    )
    raise OSError(f"Could not load a tokenizer from {where}: {e}") from e
  if not isinstance(tok, transformers.PreTrainedTokenizerFast):
    raise TypeError(f"{source}: need a fast tokenizer, got {type(tok).__name__}.")
  _declare_special_tokens(tok)
  return tok


def _declare_special_tokens(tok: transformers.PreTrainedTokenizerFast) -> None:
  """Names XLM-R's special tokens where the files left them unset."""
  vocab = tok.get_vocab()
  missing = {
      k: v for k, v in XLMR_SPECIAL_TOKENS.items() if getattr(tok, k, None) is None and v in vocab
  }
  if missing:
    tok.add_special_tokens(missing)
  for attr in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"):
    if getattr(tok, attr) is None:
      raise ValueError(
          f"Tokenizer {tok.name_or_path}: no {attr[:-3]} "
          f"(expected XLM-R specials {XLMR_SPECIAL_TOKENS})."
      )
