"""The whole run, typed: `RunSpec`, its decoding from a config and its pure checks.

    spec = spec.decode(config)          # ConfigDict / dict / saved config.json -> RunSpec
    problems = spec.check(run_spec)     # one line per bad field; no disk, no device

Decoding reads nothing but the mapping: absent fields take their defaults (so configs saved
before a field existed decode to the behaviour they were trained with), lists become tuples,
and a key no section declares is an error. Every module after this boundary takes the
`RunSpec` (or one of its sections), never the ConfigDict; the ConfigDict is kept only to be
saved verbatim in the run directory (`config.json`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from hyperx_jax.config.fields import (
    Section,
    check_choice,
    check_positive,
    field,
    is_int,
    plain,
)
from hyperx_jax.config.sections import (
    AdapterSpec,
    CheckpointSpec,
    DataSpec,
    HyperXSpec,
    MeshSpec,
    ModelSpec,
    OptimSpec,
    StreamSpec,
    TaskSpec,
    check_rules,
)
from hyperx_jax.config.vocabulary import (
    DEFAULT_LOGICAL_AXIS_RULES,
    DEV,
    EVAL_ROLES,
    METHODS,
    MLM,
    NEW_LANGUAGE_INITS,
    STEP_WORDS,
    TEST,
    TYPOLOGY_SOURCES,
    Pair,
    metric_names,
    pair_key,
)
from hyperx_jax.errors import UserError

# Every LayerNorm of the backbone (embeddings, attention and FFN sublayers): scale and bias.
ENCODER_LAYER_NORMS = r"^encoder/(.+/)?[a-z_]*ln/(scale|bias)$"


class ConfigError(UserError):
  """A config problem found before compilation; the message names each bad field."""


def trainable_rules(method: str) -> tuple[tuple[str, bool], ...]:
  """Regex -> trainable, first match wins; the last rule covers everything left. The adapter
  methods train the adapters, the heads and the backbone's LayerNorms; full fine-tuning all."""
  if method == "full_finetune":
    return ((".*", True),)
  return (
      ("^adapters/", True),
      ("^heads/", True),
      (ENCODER_LAYER_NORMS, True),
      ("^encoder/", False),
  )


def lr_multipliers(method: str) -> tuple[tuple[str, float], ...]:
  """Per-group learning-rate multipliers relative to `optim.lr` (the adapters' rate).

  Heads 10x, backbone (LayerNorms or, for full fine-tuning, everything) 0.1x: with lr 1e-3 this
  is head 1e-2 / hypernetwork 1e-3 / LNs 1e-4, which trains NER in a few hundred steps.
  """
  del method  # same grouping for every method; full fine-tuning lands the backbone at 0.1x
  return (("^heads/", 10.0), ("^adapters/", 1.0), ("^encoder/", 0.1))


@dataclasses.dataclass(frozen=True)
class RunSpec(Section):
  """One run, decoded: what to build, what to read, how to train and evaluate. Its fields are
  the config's top-level keys; nested sections are the typed `*Spec`s."""

  seed: int = field(
      123, "seeds the initialisation, the data order and dropout", compare_ignores=True
  )
  method: str = field("hyperx", "hyperx, task_adapters, madx or full_finetune")
  model: ModelSpec = field(factory=ModelSpec)
  tokenizer: Optional[str] = field(
      None, "Hugging Face tokenizer (hub id or local dir); None: model.checkpoint's"
  )
  adapter: AdapterSpec = field(factory=AdapterSpec)
  hyperx: HyperXSpec = field(factory=HyperXSpec)
  tasks: Mapping[str, TaskSpec] = field(
      factory=dict, doc="name -> task; task ids follow the names' sorted order"
  )
  languages: tuple[str, ...] = field(
      (), "every language of the run; the order gives the ids", as_list=True
  )
  train_streams: tuple[StreamSpec, ...] = field(
      (), "one per trained (task, language)", as_list=True
  )
  eval_streams: tuple[StreamSpec, ...] = field(
      (), "one per evaluated (task, language, role)", as_list=True
  )
  data: DataSpec = field(factory=DataSpec)
  optim: OptimSpec = field(factory=OptimSpec)
  trainable: tuple[tuple[str, bool], ...] = field(
      trainable_rules("hyperx"),
      "(regex, trainable) over parameter paths, first match wins; must cover every parameter",
  )
  total_steps: int = field(100_000, "training steps", resumable=True)
  mesh: MeshSpec = field(factory=MeshSpec)
  logical_axis_rules: tuple[tuple[str, Any], ...] = field(
      DEFAULT_LOGICAL_AXIS_RULES,
      "the model's logical axis -> mesh axes (hyperx_jax/sharding.py)",
      as_list=True,
  )
  checkpoint: CheckpointSpec = field(factory=CheckpointSpec)
  init_from: Optional[str] = field(
      None, "another run's workdir whose trained parameters initialise this one (few-shot)"
  )
  init_from_step: str = field(
      "best",
      "which checkpoint of init_from's run: 'best' (the step its results report: selected on "
      "dev data, else the last), 'latest', or a step number",
  )
  new_languages: tuple[str, ...] = field((), "languages new to init_from's run", as_list=True)
  new_language_init: str = field(
      "mean",
      "a new language's learned row: the 'mean' of the "
      "others, its fresh 'random' row, or zero ('typology')",
  )
  eval_every_steps: int = field(
      5000, "evaluate the dev streams every this many steps", resumable=True, compare_ignores=True
  )
  log_every_steps: int = field(
      50, "log the training metrics every this many steps", resumable=True, compare_ignores=True
  )
  diagnostics: bool = field(
      False,
      "log per-task gradient norms, adapter scale and "
      "second-moment shares (hyperx_jax/diagnostics.py)",
      compare_ignores=True,
  )

  SECTIONS = {
      "model": ModelSpec,
      "adapter": AdapterSpec,
      "hyperx": HyperXSpec,
      "data": DataSpec,
      "optim": OptimSpec,
      "mesh": MeshSpec,
      "checkpoint": CheckpointSpec,
  }

  @classmethod
  def decode(cls, raw: Any, errors: list[str], where: Optional[str] = None, **derived: Any):
    raw = plain(raw)
    top = {
        k: v
        for k, v in raw.items()
        if k not in cls.SECTIONS and k not in ("tasks", "train_streams", "eval_streams")
    }
    sections = {
        name: section.decode(raw.get(name), errors) for name, section in cls.SECTIONS.items()
    }
    tasks = {}
    raw_tasks = raw.get("tasks") or {}
    # Task ids are the names' sorted order: the order a ConfigDict (and so every config saved
    # as JSON and read back) iterates its keys in, whatever order they were set in.
    for name, entry in sorted(raw_tasks.items() if isinstance(raw_tasks, Mapping) else ()):
      tasks[name] = TaskSpec.decode(entry, errors, f"config.tasks.{name}", name=name)
    languages = tuple(raw.get("languages") or ())
    streams = {
        key: tuple(
            StreamSpec.decode_entry(
                entry, f"config.{key}[{i}]", tasks, languages, errors, is_eval=key == "eval_streams"
            )
            for i, entry in enumerate(raw.get(key) or ())
        )
        for key in ("train_streams", "eval_streams")
    }
    return super().decode(top, errors, "config", tasks=tasks, **sections, **streams)

  # -- views

  @property
  def pretrained(self) -> Optional[str]:
    """The encoder's Hugging Face checkpoint (hub id or local dir), or None (random init)."""
    return self.model.checkpoint or None

  @property
  def tokenizer_path(self) -> str:
    return self.tokenizer or self.model.checkpoint

  @property
  def dev_streams(self) -> tuple[StreamSpec, ...]:
    """Evaluated during training; `checkpoint.best_metric` selects among their scores."""
    return tuple(s for s in self.eval_streams if s.role == DEV)

  @property
  def test_streams(self) -> tuple[StreamSpec, ...]:
    """Evaluated once, on the selected checkpoint."""
    return tuple(s for s in self.eval_streams if s.role == TEST)

  def zero_shot_pairs(self) -> set[Pair]:
    """Eval pairs with no training stream of their own (zero-shot transfer)."""
    return {s.pair for s in self.eval_streams} - {s.pair for s in self.train_streams}

  def mlm_only_languages(self) -> set[str]:
    """Languages whose only training data is masked-LM text."""
    kinds: dict[str, set[str]] = {}
    for s in self.train_streams:
      kinds.setdefault(s.lang, set()).add(s.kind)
    return {lang for lang, k in kinds.items() if k == {MLM}}

  def groups_of(self, task: str) -> int:
    """G of the task's training batches: data.groups_per_batch, at most its streams."""
    streams = sum(s.task == task for s in self.train_streams)
    return max(1, min(self.data.groups_per_batch, streams))

  def untrained_languages(self) -> list[str]:
    """Languages that no training stream has (any task, MLM included)."""
    trained = {s.lang for s in self.train_streams}
    return [lang for lang in self.languages if lang not in trained]

  # -- checks

  def check(self, errors: list[str]) -> None:
    """Every section's own checks, then those across sections."""
    check_choice(errors, "config.method", self.method, METHODS)
    for name in self.SECTIONS:
      getattr(self, name).check(errors)
    if self.model.checkpoint is None and self.tokenizer is None:
      errors.append(
          "config.tokenizer: must be set when config.model.checkpoint is None "
          "(random init has no tokenizer files)"
      )
    self._check_tasks(errors)
    self._check_language_options(errors)
    for key in ("train_streams", "eval_streams"):
      self._check_streams(key, errors)
    self._check_schedule(errors)
    check_rules(errors, "config.trainable", self.trainable)
    axes = set(self.mesh.axes)
    for i, (name, target) in enumerate(self.logical_axis_rules):
      targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
      unknown = [t for t in targets if t not in axes]
      if unknown:
        errors.append(
            f"config.logical_axis_rules[{i}] ({name!r}): mesh axes {unknown} are not "
            f"in config.mesh.axes {list(self.mesh.axes)}"
        )
    self._check_best_metric(errors)

  def _check_tasks(self, errors: list[str]) -> None:
    if not self.tasks:
      errors.append("config.tasks: no tasks defined")
    for task in self.tasks.values():
      task.check(errors)
    langs = list(self.languages)
    if len(set(langs)) != len(langs):
      errors.append(f"config.languages: duplicates in {langs}")

  def _check_language_options(self, errors: list[str]) -> None:
    """Few-shot options (new languages and their init) against the hypernetwork's language
    source."""
    langs = list(self.languages)
    for lang in self.new_languages:
      if lang not in langs:
        errors.append(f"config.new_languages: {lang!r} is not in config.languages {langs}")
    init, source = self.new_language_init, self.hyperx.language_source
    check_choice(errors, "config.new_language_init", init, NEW_LANGUAGE_INITS)
    step = self.init_from_step
    if not (step in STEP_WORDS or (isinstance(step, str) and step.isdigit())):
      errors.append(
          f"config.init_from_step: {step!r} is not one of {list(STEP_WORDS)} or a step number"
      )
    if init == "typology" and source not in TYPOLOGY_SOURCES:
      errors.append(
          "config.new_language_init: 'typology' needs config.hyperx.language_source "
          f"'typology' or 'both', not {source!r}"
      )
    if (
        source == "typology"
        and self.new_languages
        and init in NEW_LANGUAGE_INITS
        and init != "typology"
    ):
      errors.append(
          f"config.new_language_init: {init!r} sets learned rows; with "
          "language_source 'typology' there are none (a new language's vector is "
          "its typology vector): set 'typology'"
      )

  def _check_streams(self, key: str, errors: list[str]) -> None:
    streams = getattr(self, key)
    if key == "train_streams" and not streams:
      errors.append("config.train_streams: no training streams")
    for i, s in enumerate(streams):
      where = f"config.{key}[{i}]"
      if s.task not in self.tasks:
        errors.append(f"{where}.task: unknown task {s.task!r}; known tasks: {list(self.tasks)}")
      if s.lang not in self.languages:
        errors.append(f"{where}.lang: {s.lang!r} is not in config.languages {list(self.languages)}")
      if s.max_examples is not None:
        check_positive(errors, f"{where}.max_examples", s.max_examples)
      if s.sample_seed is not None and (s.max_examples is None or not is_int(s.sample_seed)):
        errors.append(
            f"{where}.sample_seed: {s.sample_seed!r} needs an int seed and "
            "max_examples (how many examples to draw)"
        )
      if key == "train_streams" and s.role is not None:
        errors.append(f"{where}.role: only evaluation streams have a role ({list(EVAL_ROLES)})")
      elif key == "eval_streams":
        check_choice(errors, f"{where}.role", s.role, EVAL_ROLES)
    # One stream per (task, language); an evaluation pair may have a dev and a test stream.
    pairs = [s.pair + ((s.role,) if key == "eval_streams" else ()) for s in streams]
    twice = sorted({p for p in pairs if pairs.count(p) > 1})
    if twice:
      errors.append(
          f'config.{key}: these (task, language{", role" * (key == "eval_streams")}) '
          f"appear more than once: {twice}"
      )
    if key == "train_streams" and is_int(self.data.groups_per_batch):
      self._check_groups(streams, errors)
    if (
        key == "train_streams"
        and self.data.weights is not None
        and len(self.data.weights) != len(streams)
    ):
      errors.append(
          f"config.data.weights: {len(self.data.weights)} weights for "
          f"{len(streams)} train streams (one each)"
      )

  def _check_groups(self, streams: Sequence[StreamSpec], errors: list[str]) -> None:
    """Every task's G divides the batch's examples and rows (equal blocks per group)."""
    rows = self.data.train_rows
    for task in dict.fromkeys(s.task for s in streams):
      g = self.groups_of(task)
      if g > 1 and is_int(rows) and (self.data.batch_size % g or rows % g):
        errors.append(
            f"config.data.groups_per_batch: task {task!r} trains {g} groups per batch, which "
            f"do not split batch_size = {self.data.batch_size} ({rows} rows) into equal blocks"
        )

  def _check_schedule(self, errors: list[str]) -> None:
    check_positive(errors, "config.total_steps", self.total_steps)
    for name in ("eval_every_steps", "log_every_steps"):
      check_positive(errors, f"config.{name}", getattr(self, name))
    warmup = self.optim.warmup_steps
    if isinstance(self.total_steps, int) and not (
        isinstance(warmup, int) and 0 <= warmup < self.total_steps
    ):
      errors.append(
          f"config.optim.warmup_steps: {warmup} must be in [0, "
          f"config.total_steps={self.total_steps})"
      )

  def _check_best_metric(self, errors: list[str]) -> None:
    """`checkpoint.best_metric` must be one of the 'task:lang/metric' names the dev pairs report:
    test pairs never select, and any other name would leave the 'best' checkpoint arbitrary."""
    best = self.checkpoint.best_metric
    if best is None:
      return
    known: dict[str, list[str]] = {DEV: [], TEST: []}
    for s in self.eval_streams:
      task = self.tasks.get(s.task)
      if task is not None:
        known[s.role if s.role in known else DEV] += [
            f"{pair_key(s.task, s.lang)}/{name}" for name in metric_names(task.kind, task.metric)
        ]
    if best in known[DEV]:
      return
    if best in known[TEST]:
      errors.append(
          f"config.checkpoint.best_metric: {best!r} is a test pair's metric; the "
          "checkpoint is selected on dev pairs (eval streams with role 'dev'): "
          f"{sorted(set(known[DEV]))}"
      )
    else:
      errors.append(
          f"config.checkpoint.best_metric: {best!r} is not a metric the dev pairs "
          f"report; valid names: {sorted(set(known[DEV]))}"
      )


def raise_if(errors: list[str]) -> None:
  if errors:
    raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def decode(config: Any, errors: Optional[list[str]] = None) -> RunSpec:
  """The RunSpec of a config (a ConfigDict, a dict, a saved config.json's contents). Fields
  the config lacks take their defaults; a key no section declares is appended to `errors`, or
  raised as ConfigError when no list is given. Reads nothing but the mapping."""
  own: list[str] = [] if errors is None else errors
  spec = RunSpec.decode(config, own)
  if errors is None:
    raise_if(own)
  return spec


def parse(config: Any) -> RunSpec:
  """Decodes and runs every pure check; a ConfigError names each bad field."""
  errors: list[str] = []
  spec = decode(config, errors)
  spec.check(errors)
  raise_if(errors)
  return spec


def defaults() -> dict[str, Any]:
  """The config with every field at its default, as `common.get_config()` builds it."""
  out = RunSpec.defaults()
  out["tasks"] = {}
  return out
