"""The run's vocabulary: every name a config may use, defined once.

Methods, task kinds, metrics and the scalars each reports, dtypes, label sets, the hub datasets
and their pinned revisions, the logical-axis rules' defaults. This module imports nothing from
the package; every other module takes its constants from here.
"""

from __future__ import annotations

import math
from typing import Any, Optional

METHODS = ("hyperx", "task_adapters", "madx", "full_finetune")
METHOD_NAMES = {
    "hyperx": "Hyper-X",
    "task_adapters": "Task adapters",
    "madx": "MAD-X",
    "full_finetune": "Full fine-tuning",
}

PAIR = "pair_classification"  # XNLI-like: one label per sequence (pair)
TOKEN = "token_classification"  # NER, POS: one label per word (its first content sub-word)
MLM = "mlm"  # masked language modelling: the vocabulary is the label set
TASK_KINDS = (PAIR, TOKEN, MLM)
# Metric per task: accuracy (pairs), entity_f1 (NER), pos (token accuracy + F1), mlm_accuracy.
METRICS = ("accuracy", "entity_f1", "pos", "mlm_accuracy")
# Evaluation streams: 'dev' ones are evaluated during training and select the checkpoint;
# 'test' ones are evaluated once, on the selected checkpoint.
DEV, TEST = "dev", "test"
EVAL_ROLES = (DEV, TEST)
TOKEN_METRICS = ("entity_f1", "pos")

IGNORE_INDEX = -100  # a label position that no loss or metric counts
MLM_RATE = 0.15  # share of tokens masked per MLM example (80 % <mask>, 10 % random, 10 % kept)
PACKING_OFF = 0  # data.packing: one example per training row (k >= 2: up to k sentences per row)


def max_mlm_predictions(max_length: int, mask_rate: float = MLM_RATE) -> int:
  """K, the fixed number of masked positions an MLM example holds and the loss scores:
  ceil(mask_rate · max_length) + 1 (the featuriser never masks more)."""
  return math.ceil(mask_rate * max_length) + 1


DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots")
PLACEMENTS = ("ffn_output", "layer_output")
# model.attention: which kernel computes softmax(q k^T / sqrt(d) + mask) v. 'xla': XLA's own
# (einsum + softmax, any backend); 'cudnn': cuDNN's fused (flash) attention, NVIDIA GPUs with
# bfloat16 compute only; 'splash': the Pallas splash-attention kernel, TPUs; 'auto': the
# device's fused kernel where it can run (models/attention.py), xla otherwise.
XLA_ATTENTION, CUDNN_ATTENTION, SPLASH_ATTENTION = "xla", "cudnn", "splash"
AUTO_ATTENTION = "auto"
ATTENTION_IMPLEMENTATIONS = (XLA_ATTENTION, CUDNN_ATTENTION, SPLASH_ATTENTION)
ATTENTION_CHOICES = (AUTO_ATTENTION, *ATTENTION_IMPLEMENTATIONS)
# Where Hyper-X's language vector comes from (docs/method.md, section 2): a learned row per
# language, a learned projection of the language's URIEL typology vector, or their sum.
LEARNED_SOURCE = "learned"  # hyperx.language_source: the paper's embedding table
LANGUAGE_SOURCES = (LEARNED_SOURCE, "typology", "both")
TYPOLOGY_SOURCES = ("typology", "both")  # the sources that read URIEL features
# A new language's row in few-shot (`init_from`): the mean of the other rows, its fresh N(0, 1)
# row, or zero (with a typology projection: the language vector is then its typology vector).
NEW_LANGUAGE_INITS = ("mean", "random", "typology")
# Learned source: the vector of a language with no training data at all is its own, never
# trained row ('row'), or the mean of the trained languages' rows ('mean').
UNTRAINED_LANGUAGE_VECTORS = ("row", "mean")
# URIEL feature sets read from lang2vec's feature_predictions.npz (kNN-imputed, 0/1 values),
# each with its feature-name prefix there: syntax 103, phonology 28, phoneme inventory 158.
TYPOLOGY_FEATURE_SETS = {"syntax_knn": "S_", "phonology_knn": "P_", "inventory_knn": "INV_"}
POOLINGS = ("cls", "mean")  # pair classification reads `<s>`, or the mean over real tokens
DATA_AXES = ("data", "fsdp")  # the batch is split over these mesh axes
TENSOR_AXIS = "tensor"  # attention heads and FFN columns are split over this mesh axis


# ------------------------------------------------------------------------------ label sets

XNLI_LABELS = ("entailment", "neutral", "contradiction")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")  # WikiANN, IOB2
UPOS_TAGS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)  # Universal Dependencies v2

# Class-id columns of the Hugging Face hub datasets read by the `hf_parquet` source, and the
# names of their ids (the datasets' ClassLabel features; a file's own `huggingface` schema
# metadata overrides these when present).
HF_CLASS_LABELS = {"ner_tags": NER_LABELS, "pos_tags": UPOS_TAGS, "label": XNLI_LABELS}
HF_NO_LABEL = -1  # a pair without a gold label (skipped and counted)

# Hub datasets and the revisions they are read at (commit shas: the files never change under a
# run). MultiNLI: data/<split>-*.parquet; XNLI: <lang>/<split>-*.parquet; XTREME:
# PAN-X.<lang>/<split>-*.parquet and udpos.<Language>/<split>-*.parquet.
HUB_DATASETS = {
    "multi_nli": ("nyu-mll/multi_nli", "da70db2af9d09693783c3320c4249840212ee221"),
    "xnli": ("facebook/xnli", "d7c818defc3e3539dd134589115c906f08657a00"),
    "xtreme": ("google/xtreme", "68bd9e06bf4bbe671073c975ccd61d754e1bd3d6"),
}
# Language code -> XTREME's UD-POS config suffix (udpos.<Language>).
XTREME_UDPOS_LANGUAGES = {
    "af": "Afrikaans",
    "ar": "Arabic",
    "eu": "Basque",
    "bg": "Bulgarian",
    "nl": "Dutch",
    "en": "English",
    "et": "Estonian",
    "fi": "Finnish",
    "fr": "French",
    "de": "German",
    "el": "Greek",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "kk": "Kazakh",
    "ko": "Korean",
    "zh": "Chinese",
    "mr": "Marathi",
    "fa": "Persian",
    "pt": "Portuguese",
    "ru": "Russian",
    "es": "Spanish",
    "tl": "Tagalog",
    "ta": "Tamil",
    "te": "Telugu",
    "th": "Thai",
    "tr": "Turkish",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "yo": "Yoruba",
}
IOB2_MODES = ("repair", "strict")  # an I-X that does not continue an X entity: B-X, or an error

# Which checkpoint of a run (--step, init_from_step): the step its results report ('best': the
# one selected on dev data, else the last), the latest one, or a step number.
BEST_STEP, LATEST_STEP = "best", "latest"
STEP_WORDS = (BEST_STEP, LATEST_STEP)

Pair = tuple[str, str]  # (task, language)


def pair_key(task: str, lang: str) -> str:
  """('ner', 'tr') -> 'ner:tr', the name of a pair in results and metric names."""
  return f"{task}:{lang}"


def metric_names(kind: str, metric: Optional[str]) -> tuple[str, ...]:
  """The scalars an evaluation of a task reports (`metrics.MetricAccumulator.result`, without
  loss): what `checkpoint.best_metric` may name after 'task:lang/'."""
  if kind == TOKEN:
    return ("precision", "recall", "f1") if metric == "entity_f1" else ("accuracy", "f1")
  return ("accuracy",)


# Logical axis -> mesh axis, for XLM-R + Hyper-X (base to XXL), t5x style:
# - batch is split over every data-parallel axis ('data' and 'fsdp').
# - embed (hidden) is the FSDP axis of the frozen backbone: every [embed, *] kernel and the
#   [vocab, embed] table are split across 'fsdp' and gathered per layer inside the scan.
# - mlp (FFN), heads (attention heads) and vocab go to 'tensor' (Megatron-style column/row split).
# - layers (the scanned axis) is never split: the scan slices it.
# - The hypernetwork is small (~1-3M parameters) and runs once per step for all layers: its
#   embeddings, projector and generator inputs are replicated, while the generator outputs
#   (hyper_out = h*b + b + b*h + 3h, the big dimension) go on 'fsdp' so large models do not
#   replicate the biggest hypernetwork matrices. The generated adapters are tiny and replicated.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", DATA_AXES),
    ("embed", "fsdp"),
    ("mlp", TENSOR_AXIS),
    ("heads", TENSOR_AXIS),
    ("vocab", TENSOR_AXIS),
    ("kv", None),
    ("layers", None),
    ("length", None),
    ("bottleneck", None),
    ("hyper_in", None),
    ("hyper_out", "fsdp"),
    ("tasks", None),
    ("languages", None),
    ("labels", None),
)
