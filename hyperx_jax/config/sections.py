"""One typed section per part of the config: its fields' defaults, meanings and pure checks.

A section is a frozen dataclass named after its key in the config: `DataSpec` is
`config.data`, `TaskSpec` one entry of `config.tasks`, `StreamSpec` one of
`config.train_streams` / `config.eval_streams`. Each field is declared once (`fields.field`:
default, meaning, whether it may change on resume or between the runs of one compare column).
`check` finds what is wrong with the values alone; checks that read the disk, need a device or
a checkpoint are in `environment.py`, and those across sections in `spec.py`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Optional, Sequence

from hyperx_jax.config.fields import Section, check_choice, check_positive, field, is_int, is_number
from hyperx_jax.config.vocabulary import (
    ATTENTION_CHOICES,
    AUTO_ATTENTION,
    CUDNN_ATTENTION,
    DATA_AXES,
    DEV,
    DTYPES,
    LANGUAGE_SOURCES,
    LEARNED_SOURCE,
    METRICS,
    PACKING_OFF,
    PAIR,
    PLACEMENTS,
    POOLINGS,
    REMAT_POLICIES,
    SPLASH_ATTENTION,
    TASK_KINDS,
    TOKEN,
    TYPOLOGY_FEATURE_SETS,
    UNTRAINED_LANGUAGE_VECTORS,
    Pair,
)

Rules = tuple[tuple[str, Any], ...]


def check_dropout(errors: list[str], where: str, value: Any) -> None:
  if not (is_number(value) and 0 <= value < 1):
    errors.append(f"{where}: {value!r} is not a dropout rate in [0, 1)")


def check_regex(errors: list[str], where: str, pattern: Any) -> bool:
  try:
    re.compile(pattern)
  except (TypeError, re.error) as e:
    errors.append(f"{where}: {pattern!r} is not a regex ({e})")
    return False
  return True


def check_rules(errors: list[str], where: str, rules: Any, *, positive: bool = False) -> None:
  """(regex, value) pairs; `positive`: the values are multipliers > 0."""
  for i, rule in enumerate(rules or ()):
    if not (isinstance(rule, (list, tuple)) and len(rule) == 2):
      errors.append(f"{where}[{i}]: expected (regex, value), got {rule!r}")
      continue
    if (
        check_regex(errors, f"{where}[{i}]", rule[0])
        and positive
        and not (is_number(rule[1]) and rule[1] > 0)
    ):
      errors.append(f"{where}[{i}]: multiplier must be positive, got {rule[1]!r}")


# --------------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class ModelSpec(Section):
  """The encoder: which pretrained checkpoint, in which precision, with which kernels."""

  PATH = "model"

  checkpoint: Optional[str] = field(
      "FacebookAI/xlm-roberta-base",
      "Hugging Face checkpoint of the encoder: a hub id or a "
      "local directory (config.json + weights); None: random init of `preset`",
  )
  preset: str = field("base", "XLM-R size used without a checkpoint: base, large, xl, xxl")
  dtype: str = field("float32", "compute dtype: float32 or bfloat16")
  param_dtype: str = field("float32", "parameter dtype: float32 or bfloat16")
  scan_layers: bool = field(
      True,
      "scan over the stacked layers (False: an unrolled loop, for debugging and parity tests)",
  )
  remat: str = field(
      "none", "rematerialisation of each layer in the backward pass: none, full or dots"
  )
  attention: str = field(
      AUTO_ATTENTION,
      "the attention kernel: 'auto' (cuDNN's fused attention on NVIDIA GPUs "
      "with bfloat16 compute, splash attention on TPUs, XLA's elsewhere), 'xla', 'cudnn' or "
      "'splash' (models/attention.py)",
      resumable=True,
      compare_ignores=True,
  )
  hidden_dropout: float = field(0.1, "dropout on the encoder's hidden states")
  attention_dropout: float = field(0.1, "dropout on the attention probabilities")
  classifier_dropout: float = field(0.1, "dropout before the task heads")

  def check(self, errors: list[str]) -> None:
    for name in ("dtype", "param_dtype"):
      check_choice(errors, self.where(name), getattr(self, name), DTYPES)
    check_choice(errors, self.where("remat"), self.remat, REMAT_POLICIES)
    for name in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
      check_dropout(errors, self.where(name), getattr(self, name))
    if check_choice(errors, self.where("attention"), self.attention, ATTENTION_CHOICES) and (
        self.attention in (CUDNN_ATTENTION, SPLASH_ATTENTION) and self.attention_dropout
    ):
      errors.append(
          f'{self.where("attention")}: {self.attention!r} cannot run here: '
          f"{self.attention!r} attention has no attention-probability dropout; "
          f'{self.where("attention_dropout")} is {self.attention_dropout} (set it to '
          f"0, or use {AUTO_ATTENTION!r}: the fused kernel wherever no dropout "
          "applies)"
      )


@dataclasses.dataclass(frozen=True)
class AdapterSpec(Section):
  """The bottleneck adapters every method inserts (generated, static or stacked)."""

  PATH = "adapter"

  bottleneck: int = field(256, "b, the adapter's bottleneck width (the authors' run: 256)")
  placement: str = field(
      "ffn_output",
      "where each layer's adapter sits: 'ffn_output' (after the "
      "FFN's output dense, before its Add & LayerNorm) or 'layer_output'",
  )
  layer_norm: bool = field(True, "the adapter's own (conditional) LayerNorm on its output")

  def check(self, errors: list[str]) -> None:
    check_choice(errors, self.where("placement"), self.placement, PLACEMENTS)
    check_positive(errors, self.where("bottleneck"), self.bottleneck)


@dataclasses.dataclass(frozen=True)
class HyperXSpec(Section):
  """The hypernetwork: source embeddings, projector, generators (docs/method.md)."""

  PATH = "hyperx"

  # Fields only the hypernetwork reads (`hypernetwork_only`): the other methods' runs may
  # differ in them, so a changed default here neither stops their resume nor splits their
  # `compare` columns.
  task_dim: int = field(64, "size of a task embedding", hypernetwork_only=True)
  lang_dim: int = field(64, "size of a language vector", hypernetwork_only=True)
  layer_dim: int = field(64, "size of a layer embedding", hypernetwork_only=True)
  projected_dim: int = field(
      192, "P, the projected source size the generators read", hypernetwork_only=True
  )
  use_projector: bool = field(
      True,
      "the source projector MLP (False: generators read the source itself)",
      hypernetwork_only=True,
  )
  condition_on_layer: bool = field(
      True,
      "a layer embedding in the source (False: one generator per layer)",
      hypernetwork_only=True,
  )
  init_std: float = field(0.01, "std of the projector and generator kernels at init")
  unit_projection: bool = field(
      False,
      "generators read p / ||p|| (docs/method.md, section 3); the paper reads p as it is",
      hypernetwork_only=True,
  )
  language_source: str = field(
      LEARNED_SOURCE,
      "the language vector: 'learned' rows, 'typology' (a learned projection of "
      "the language's URIEL features) or 'both' (their sum)",
  )
  typology_features: tuple[str, ...] = field(
      tuple(TYPOLOGY_FEATURE_SETS),
      "the URIEL feature sets a typology vector reads",
      hypernetwork_only=True,
  )
  untrained_language: str = field(
      "row",
      "learned rows: a language with no training data reads its own, never trained "
      "'row', or the 'mean' of the trained languages' rows",
  )

  def check(self, errors: list[str]) -> None:
    if not check_choice(
        errors, self.where("language_source"), self.language_source, LANGUAGE_SOURCES
    ):
      return
    sets = self.typology_features
    if not isinstance(sets, tuple) or not sets or any(s not in TYPOLOGY_FEATURE_SETS for s in sets):
      errors.append(
          f'{self.where("typology_features")}: {list(sets)!r}; expected a non-empty '
          f"list of "
          f"{list(TYPOLOGY_FEATURE_SETS)}"
      )
    if not isinstance(self.unit_projection, bool):
      errors.append(
          f'{self.where("unit_projection")}: {self.unit_projection!r}; expected True ' "or False"
      )
    if check_choice(
        errors,
        self.where("untrained_language"),
        self.untrained_language,
        UNTRAINED_LANGUAGE_VECTORS,
    ) and (self.untrained_language == "mean" and self.language_source != LEARNED_SOURCE):
      errors.append(
          f"{self.where('untrained_language')}: 'mean' reads learned rows; with "
          f"language_source {self.language_source!r} an untrained language reads its "
          "typology vector (set 'row')"
      )


# ---------------------------------------------------------------------------- tasks, streams


@dataclasses.dataclass(frozen=True)
class TaskSpec(Section):
  """A task (an entry `config.tasks.<name>`): its kind, label names and metric. Task ids
  follow the names' sorted order."""

  PATH = "tasks"

  name: str = ""  # the entry's key, not a field of the entry
  kind: str = field(PAIR, "pair_classification, token_classification or mlm")
  labels: tuple[str, ...] = field((), "the label names (empty for mlm)")
  metric: str = field(
      "accuracy", "accuracy (pairs), entity_f1 (NER), pos (token accuracy + F1) or mlm_accuracy"
  )
  pooling: str = field(
      "cls", "pair classification reads '<s>' ('cls') or the 'mean' over real tokens"
  )

  @classmethod
  def declared(cls) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.name != "name")

  @property
  def num_labels(self) -> int:
    return len(self.labels)

  def check(self, errors: list[str]) -> None:
    where = f"config.tasks.{self.name}"
    check_choice(errors, f"{where}.kind", self.kind, TASK_KINDS)
    check_choice(errors, f"{where}.metric", self.metric, METRICS)
    check_choice(errors, f"{where}.pooling", self.pooling, POOLINGS)
    if self.kind in (PAIR, TOKEN) and not self.labels:
      errors.append(f"{where}.labels: a {self.kind} task needs its label list")


@dataclasses.dataclass(frozen=True)
class StreamSpec(Section):
  """One (task, language) data stream: where its examples come from. Decoded against the run's
  tasks and languages, it also carries the task's kind and labels and both ids."""

  task: str = field("", "a key of config.tasks")
  lang: str = field("", "one of config.languages")
  source: Mapping[str, Any] = field(
      factory=dict, doc='where the examples come from: {"type": ' "..., ...} (docs/data.md)"
  )
  max_examples: Optional[int] = field(None, "read at most this many examples (the first ones)")
  sample_seed: Optional[int] = field(
      None,
      "with max_examples: that many examples drawn at random with this seed instead of the "
      "first ones (a few-shot sample)",
      compare_ignores=True,
  )
  role: Optional[str] = field(
      None,
      "eval streams: 'dev' (evaluated during training, selects "
      "the checkpoint; the default) or 'test' (once, at the end)",
  )
  kind: str = ""  # derived from the task
  labels: tuple[str, ...] = ()
  task_id: int = -1
  lang_id: int = -1

  EVAL_ROLE = DEV  # an eval stream without a role

  @classmethod
  def declared(cls) -> tuple[dataclasses.Field, ...]:
    return tuple(
        f for f in dataclasses.fields(cls) if f.name not in ("kind", "labels", "task_id", "lang_id")
    )

  @classmethod
  def decode_entry(
      cls,
      raw: Any,
      where: str,
      tasks: Mapping[str, TaskSpec],
      languages: Sequence[str],
      errors: list[str],
      *,
      is_eval: bool,
  ) -> StreamSpec:
    """An entry of train_streams / eval_streams, with its task's kind, labels and ids (-1 for
    an unknown task or language: `check` reports them)."""
    stream = cls.decode(raw, errors, where)
    task = tasks.get(stream.task) if isinstance(stream.task, str) else None
    ids = {
        "task_id": list(tasks).index(stream.task) if task else -1,
        "lang_id": list(languages).index(stream.lang) if stream.lang in languages else -1,
    }
    derived = dict(kind=task.kind, labels=task.labels) if task else {}
    role = stream.role if not is_eval or stream.role is not None else cls.EVAL_ROLE
    return dataclasses.replace(stream, role=role, **derived, **ids)

  @property
  def pair(self) -> Pair:
    return (self.task, self.lang)


# ------------------------------------------------------------------------------------ data


@dataclasses.dataclass(frozen=True)
class DataSpec(Section):
  """Batching and mixing: fixed shapes, temperature or fixed stream weights, packing."""

  PATH = "data"

  max_length: int = field(128, "sub-words per example, <s> and </s> included")
  batch_size: int = field(32, "sentences per training step (global, over every host)")
  eval_batch_size: int = field(64, "examples per evaluation step (global)")
  temperature: float = field(
      5.0, "T: stream i is drawn with probability proportional to (n_i / N)^(1/T)"
  )
  weights: Optional[tuple[float, ...]] = field(
      None, "fixed stream shares, one per train stream (overrides temperature)"
  )
  prefetch: int = field(
      0, "batches prepared ahead on a background thread", resumable=True, compare_ignores=True
  )
  packing: int = field(
      PACKING_OFF,
      f"sentences per training row at most ({PACKING_OFF}: one example per padded row)",
  )
  groups_per_batch: int = field(
      1,
      "G: (task, language) groups in a training batch, each from its own stream of the drawn "
      "stream's task (at most the task's streams), batch_size / G examples each; 1: one pair "
      "per batch, as the paper",
  )
  packed_rows: int = field(
      0, "with packing: the rows of a packed batch, which holds up to batch_size sentences"
  )

  def check(self, errors: list[str]) -> None:
    for name in ("max_length", "batch_size", "eval_batch_size", "groups_per_batch"):
      check_positive(errors, self.where(name), getattr(self, name))
    check_positive(errors, self.where("temperature"), self.temperature, "a number")
    if not is_int(self.prefetch) or self.prefetch < 0:
      errors.append(f'{self.where("prefetch")}: must be an int >= 0, got {self.prefetch!r}')
    if self.weights is not None and not all(is_number(w) and w >= 0 for w in self.weights):
      errors.append(f'{self.where("weights")}: {self.weights!r}; expected numbers >= 0')
    self._check_packing(errors)

  def _check_packing(self, errors: list[str]) -> None:
    """Off, or k >= 2 with packed_rows in [1, batch_size] rows that can hold a batch."""
    k, rows = self.packing, self.packed_rows
    if not is_int(k) or (k != PACKING_OFF and k < 2):
      errors.append(
          f'{self.where("packing")}: {k!r} is not {PACKING_OFF} (off: one example per '
          "row) or an int >= 2 (the most sentences a training row holds)"
      )
    elif k == PACKING_OFF and rows != 0:
      errors.append(
          f'{self.where("packed_rows")}: {rows!r} is set but {self.where("packing")} '
          f"is off ({PACKING_OFF}); set both or neither"
      )
    elif k != PACKING_OFF and not self.packed_rows_valid:
      errors.append(
          f'{self.where("packed_rows")}: {rows!r} is not an int in [1, batch_size = '
          f"{self.batch_size}] (the rows that hold a packed batch of up to batch_size "
          "sentences; python -m hyperx_jax.benchmarks.packing_bench shows how many a "
          "dataset needs)"
      )
    elif k != PACKING_OFF and rows * k < self.batch_size:
      errors.append(
          f'{self.where("packed_rows")}: {rows} rows of at most {k} sentences '
          f"(data.packing) never hold a batch of batch_size = {self.batch_size}"
      )

  @property
  def packed(self) -> bool:
    return self.packing != PACKING_OFF

  @property
  def packed_rows_valid(self) -> bool:
    return is_int(self.packed_rows) and 1 <= self.packed_rows <= self.batch_size

  @property
  def train_rows(self) -> int:
    """Rows of a training batch: what the mesh splits."""
    return self.packed_rows if self.packed else self.batch_size


# ------------------------------------------------------------------------------- optimiser


@dataclasses.dataclass(frozen=True)
class OptimSpec(Section):
  """AdamW with linear warm-up and decay, global-norm clipping, per-group lr multipliers."""

  PATH = "optim"

  lr: float = field(1e-3, "the base learning rate (the adapters'; see lr_multipliers)")
  warmup_steps: int = field(
      4000, "linear warm-up from 0 to lr, then linear decay to 0 at total_steps"
  )
  weight_decay: float = field(
      0.01, "decoupled weight decay (not on biases, LayerNorms, embedding tables)"
  )
  b1: float = field(0.9, "Adam's beta1")
  b2: float = field(0.999, "Adam's beta2")
  eps: float = field(1e-8, "Adam's epsilon")
  clip_norm: Optional[float] = field(1.0, "global gradient-norm clipping (None: off)")
  per_task_state: Optional[str] = field(
      None,
      "regex over parameter paths: these parameters keep one Adam state per task (None: "
      "the paper's single state)",
  )
  per_task_grad_norm: Optional[str] = field(
      None, "regex: these parameters' gradients are divided by an EMA of the task's own norm"
  )
  lr_multipliers: Rules = field(
      (), "(regex, multiplier) per parameter group, first match wins, relative to lr"
  )

  def check(self, errors: list[str]) -> None:
    check_positive(errors, self.where("lr"), self.lr, "a number")
    check_rules(errors, self.where("lr_multipliers"), self.lr_multipliers, positive=True)
    for name in ("per_task_state", "per_task_grad_norm"):
      if getattr(self, name):
        check_regex(errors, self.where(name), getattr(self, name))


# -------------------------------------------------------------------------- checkpoint, mesh


@dataclasses.dataclass(frozen=True)
class CheckpointSpec(Section):
  """Orbax checkpoints of the trainable state, optimiser state and data iterator."""

  PATH = "checkpoint"

  every_steps: int = field(
      1000, "save every this many steps (and at the end)", resumable=True, compare_ignores=True
  )
  keep: int = field(
      3,
      "checkpoints kept (the best one too, with best_metric)",
      resumable=True,
      compare_ignores=True,
  )
  async_save: bool = field(True, "save in the background", resumable=True, compare_ignores=True)
  best_metric: Optional[str] = field(
      None,
      "the dev metric that selects the reported checkpoint, 'task:lang/metric' (e.g. "
      "'ner:en/f1'); None: the last step",
  )

  def check(self, errors: list[str]) -> None:
    for name in ("every_steps", "keep"):
      check_positive(errors, self.where(name), getattr(self, name))


@dataclasses.dataclass(frozen=True)
class MeshSpec(Section):
  """The device mesh: one size per axis, at most one -1 (all remaining devices)."""

  PATH = "mesh"

  shape: tuple[int, ...] = field((-1, 1, 1), "devices per mesh axis; one -1 takes the rest")
  axes: tuple[str, ...] = field(("data", "fsdp", "tensor"), "the mesh axis names")

  def check(self, errors: list[str]) -> None:
    if len(self.shape) != len(self.axes):
      errors.append(
          f"config.mesh.shape {self.shape} and config.mesh.axes {self.axes} differ in length"
      )

  def resolve(self, device_count: int) -> Optional[tuple[int, ...]]:
    """The shape with its -1 filled in; None when it cannot be laid out on the devices."""
    shape = tuple(int(s) for s in self.shape)
    known = math.prod(s for s in shape if s != -1)
    if len(shape) != len(self.axes) or shape.count(-1) > 1 or known <= 0:
      return None
    if -1 in shape:
      if device_count % known:
        return None
      shape = tuple(device_count // known if s == -1 else s for s in shape)
    return shape if math.prod(shape) == device_count else None

  def data_parallel(self, device_count: int) -> Optional[int]:
    """How many ways the batch is split (the product of the data axes)."""
    resolved = self.resolve(device_count)
    if resolved is None:
      return None
    return math.prod(n for n, a in zip(resolved, self.axes) if a in DATA_AXES)
