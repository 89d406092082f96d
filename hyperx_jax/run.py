"""A run: its model built from a spec, its trainable/frozen split, its directory, its restore.

Everything that trains, evaluates, exports or continues a run goes through this module:

    parts, report = run.create_model(spec, mesh)   # abstract -> shardings -> sharded init ->
                                                   # pretrained encoder -> (graphdef,
                                                   # trainable, frozen)
    trained = run.restore(workdir, step=None)      # a trained run at a step: its config, spec,
                                                   # mesh and model with the restored params

The run directory holds `config.json` (the ConfigDict as given, read back by `restore`),
`checkpoints/`, the metric logs and `results.{json,md,csv,png}`. A run in an existing directory
must have its config: `check_saved_config` lists every field that differs from `config.json`
beyond `changes.RESUMABLE_CHANGES` (how long and how often, not what is trained).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from hyperx_jax import checkpoint, fileio, optim, provenance, report, sharding
from hyperx_jax.config import ConfigError, RunSpec, changes, decode, environment
from hyperx_jax.config.vocabulary import BEST_STEP as BEST
from hyperx_jax.config.vocabulary import LATEST_STEP as LATEST
from hyperx_jax.config.vocabulary import METHOD_NAMES, MLM, PAIR, STEP_WORDS
from hyperx_jax.errors import UserError
from hyperx_jax.models import weights
from hyperx_jax.models.model import HyperXModel, ModelConfig, build_model
from hyperx_jax.models.parameters import parameter_report
from hyperx_jax.tree import flat_paths, map_params, path_str

CONFIG_FILE = "config.json"


class ModelParts(NamedTuple):
  """A model split for jit: its structure, the trainable state and the frozen state, and the
  configuration it was built with on this machine."""

  graphdef: Any
  trainable: Any  # nnx.State of the trainable parameters
  frozen: Any  # nnx.State of everything else (frozen parameters, RNG state, ...)
  config: ModelConfig

  def merge(self, trainable: Any = None) -> HyperXModel:
    return nnx.merge(self.graphdef, self.trainable if trainable is None else trainable, self.frozen)


# ------------------------------------------------------------------------------- the model


def _model_fn(spec: ModelConfig, seed: int) -> Callable[[], nnx.Module]:
  return lambda: build_model(spec, rngs=nnx.Rngs(params=seed, dropout=seed))


def abstract_model(spec: RunSpec, model_config: Optional[ModelConfig] = None) -> nnx.Module:
  """The model with ShapeDtypeStructs for arrays (nothing allocated)."""
  model_config = model_config or environment.model_config(spec)
  return nnx.eval_shape(_model_fn(model_config, spec.seed))


def trainable_predicate(spec: RunSpec, model: nnx.Module):
  """The trainable filter and its report; a parameter that no rule matches is a ConfigError
  naming config.trainable (raised on the abstract model, before anything is allocated)."""
  try:
    return optim.trainable_filter(spec.trainable, model)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def create_model(
    spec: RunSpec, mesh: Mesh, *, load_pretrained: bool = True, strict_attention: bool = True
) -> tuple[ModelParts, str]:
  """Sharded init (+ the pretrained encoder weights), split into (graphdef, trainable, frozen).
  The model's configuration comes from the checkpoint's sizes and this device
  (`environment.model_config`; `strict_attention=False`: an explicit attention kernel this
  device cannot run falls back to XLA's).

  Returns the parts and a printable parameter report.
  """
  model_config = environment.model_config(spec, strict_attention=strict_attention)
  predicate, rule_report = trainable_predicate(spec, abstract_model(spec, model_config))
  model = sharding.sharded_init(_model_fn(model_config, spec.seed), mesh, spec.logical_axis_rules)
  if load_pretrained and spec.pretrained:
    load_pretrained_weights(model, spec.pretrained)
  graphdef, trainable, frozen = nnx.split(model, predicate, ...)
  trainable_paths = {path_str(p) for p, _ in nnx.to_flat_state(trainable)}
  params = parameter_report(model, lambda path: path in trainable_paths)
  return ModelParts(graphdef, trainable, frozen, model_config), f"{params}\n{rule_report}"


def load_pretrained_weights(model: HyperXModel, checkpoint_dir: str) -> None:
  """The encoder's weights, and the MLM heads' where the checkpoint has an `lm_head`."""
  encoder_shardings = shardings_of(nnx.state(model.encoder, nnx.Param))
  weights.load_encoder_weights(model.encoder, checkpoint_dir, shardings=encoder_shardings)
  mlm_heads = [model.heads[t] for t in model.task_names if model.task_kind(t) == MLM]
  head_weights = weights.load_mlm_head_weights(checkpoint_dir) if mlm_heads else None
  for head in mlm_heads:
    if head_weights is not None:
      head.load_hf(head_weights)


def shardings_of(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.sharding, tree)


# ------------------------------------------------------------------------- the run directory


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`workdir/config.json`: the config as given (process 0), replaced atomically."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  fileio.atomic_write_text(path / CONFIG_FILE, config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved into its workdir."""
  path = epath.Path(workdir) / CONFIG_FILE  # local or gs://
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def check_saved_config(
    config: ml_collections.ConfigDict, workdir: str, *, allow_change: bool = False
) -> None:
  """A ConfigError listing each field where `config` differs from the workdir's config.json
  outside changes.RESUMABLE_CHANGES (none without a config.json, or with `allow_change`). A
  field the saved config lacks (added since) is no change while it keeps its default."""
  path = epath.Path(workdir) / CONFIG_FILE
  if allow_change or not path.exists():
    return
  new = json.loads(config.to_json_best_effort())  # the form save_config writes
  saved = json.loads(path.read_text())
  allowed = changes.for_method(changes.RESUMABLE_CHANGES, saved, new)
  differences = changes.changes_beyond(saved, new, allowed)
  if differences:
    lines = [
        f"  config.{k}: {old!r} (saved) -> {value!r}" for k, (old, value) in differences.items()
    ]
    raise ConfigError(
        f"the config differs from {path}, the one this workdir was trained with, "
        f"beyond {allowed}:\n" + "\n".join(lines) + "\nUse a "
        "new workdir, or pass --allow_config_change to continue with the new "
        "config."
    )


def chance_accuracy(spec: RunSpec) -> dict[str, float]:
  """Accuracy of a uniform guess, where the label set fixes it: 1 / labels for pair tasks.
  (Token tasks and MLM have none: their chance depends on the label frequencies.)"""
  return {
      name: 1 / len(task.labels)
      for name, task in spec.tasks.items()
      if task.kind == PAIR and task.labels
  }


def write_results(
    config: ml_collections.ConfigDict,
    spec: RunSpec,
    out_dir: str,
    results: Mapping[str, Mapping[str, Any]],
    step: int,
    selection: Optional[Mapping[str, Any]] = None,
) -> None:
  """results.{json,md,csv,png} with their provenance (process 0) and the table on the
  console; `selection` (evaluate.selection) records what chose the checkpoint."""
  if not results:
    raise UserError(f"nothing to report for {out_dir}: the run has no eval streams")
  if jax.process_index() != 0:
    return
  about = provenance.provenance(
      step=step,
      method=spec.method,
      seed=spec.seed,
      config_json=config.to_json_best_effort(),
      selection=selection,
  )
  paths = report.write_results(
      out_dir,
      results,
      method=METHOD_NAMES[spec.method],
      provenance=about,
      chance_accuracy=chance_accuracy(spec),
  )
  print(report.format_table(results), flush=True)
  logging.info("results of step %d: %s", step, paths["json"].parent / "results.{json,md,csv,png}")


# ------------------------------------------------------------------------- a trained run


class TrainedRun(NamedTuple):
  """A run restored at a checkpoint step."""

  workdir: str
  config: ml_collections.ConfigDict
  spec: RunSpec
  mesh: Mesh
  parts: ModelParts  # trainable = the restored parameters
  step: int
  step_reason: str = ""  # why this step (`resolve_step`)

  def model(self) -> HyperXModel:
    return self.parts.merge()

  @property
  def model_config(self) -> ModelConfig:
    return self.parts.config


def parse_step(text: Union[str, int, None]) -> Union[str, int]:
  """'best', 'latest' or a step number (from a flag or a config field)."""
  if text is None or text == "":
    return BEST
  if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
    return text
  if isinstance(text, str) and (text in STEP_WORDS or text.isdigit()):
    return int(text) if text.isdigit() else text
  raise UserError(
      f"step {text!r}: expected 'best' (the step the run's results report), "
      "'latest', or a step number"
  )


def reported_step(workdir: str) -> tuple[Optional[int], dict[str, Any]]:
  """(the step the run's results.json reports, what selected it: provenance `selection`, or {});
  (None, {}) without a results.json that names a step."""
  path = epath.Path(workdir) / "results.json"
  if not path.exists():
    return None, {}
  _, about = report.from_file(json.loads(path.read_text()))
  selection = dict((about or {}).get("selection") or {})
  step = selection.get("step", (about or {}).get("step"))
  return (None, {}) if step is None else (int(step), selection)


def resolve_step(workdir: str, step: Union[str, int, None] = BEST) -> tuple[Optional[int], str]:
  """(the checkpoint step to restore, why) of 'best', 'latest' or a number; None: the latest.

  'best' is the step the run's results.json reports: the one selected on dev data
  (`checkpoint.best_metric`), else the last step; a run without results.json yet (unfinished)
  falls back to its latest checkpoint, and says so."""
  step = parse_step(step)
  if isinstance(step, int):
    return step, "asked for"
  if step == LATEST:
    return None, "the latest checkpoint"
  reported, selection = reported_step(workdir)
  if reported is None:
    return None, "the latest checkpoint (no results.json with a step yet: an unfinished run)"
  if selection.get("by"):
    value = selection.get("value")
    shown = f" = {value:.4f}" if isinstance(value, (int, float)) else ""
    return reported, f"the step results.json reports: best {selection['by']}{shown} on dev"
  return reported, "the step results.json reports: the last step (no dev selection)"


def restore(
    workdir: str,
    *,
    step: Union[str, int, None] = BEST,
    mesh: Optional[Mesh] = None,
    load_pretrained: bool = True,
    allow_fallback: bool = False,
    extra_languages: Sequence[str] = (),
) -> TrainedRun:
  """Rebuilds a trained run from its `config.json` and restores its trainable parameters at
  `step`: 'best' (default: the step its results report, `resolve_step`), 'latest' or a
  number. An unreadable step is an error (checkpoint.UnreadableCheckpointError) unless
  `allow_fallback`: then the latest readable earlier step is used, with a warning naming it.
  The frozen encoder comes from its pretrained source (`load_pretrained=False` leaves it
  randomly initialised, when only the trainable parameters are wanted). `mesh` defaults to the
  run's configured mesh on this machine. `extra_languages`: languages the run lacks, appended
  to its spec with new vectors (their typology vectors with a typology source, else the mean
  of the learned rows), as `init_from` gives a new language."""
  number, why = resolve_step(workdir, step)
  config = load_config(workdir)
  # Checked when the run started (its data need not be here now); the attention kernel is
  # this machine's: a run trained with 'cudnn' evaluates on a CPU with 'xla'.
  spec = decode(config)
  mesh = mesh if mesh is not None else sharding.make_mesh(spec.mesh)
  parts, _ = create_model(spec, mesh, load_pretrained=load_pretrained, strict_attention=False)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, async_save=False)
  try:
    if number is not None and number not in ckpt.all_steps():
      raise UserError(
          f"{workdir}: no checkpoint of step {number} ({why}); its checkpoints: "
          f"{ckpt.all_steps()}"
      )
    restored = ckpt.restore(
        number, abstract_trainable=parts.trainable, allow_fallback=allow_fallback
    )
  finally:
    ckpt.close()
  if restored["step"] != number and number is not None:
    why = f"the latest readable step before {number} (allow_fallback)"
  logging.info("%s: step %d, %s", workdir, restored["step"], why)
  parts = parts._replace(trainable=restored["trainable"])
  new = tuple(lang for lang in dict.fromkeys(extra_languages) if lang not in spec.languages)
  if new:
    spec, parts = with_new_languages(spec, parts, new, mesh, load_pretrained)
  return TrainedRun(workdir, config, spec, mesh, parts, restored["step"], why)


def with_new_languages(
    spec: RunSpec, parts: ModelParts, new: Sequence[str], mesh: Mesh, load_pretrained: bool
) -> tuple[RunSpec, ModelParts]:
  """The run's model with `new` languages appended: the trained parameters copied over
  (`merge_trainable`), the new rows set per `init_new_languages`."""
  typology = spec.hyperx.language_source in ("typology", "both")
  spec = dataclasses.replace(
      spec,
      languages=spec.languages + tuple(new),
      new_languages=tuple(new),
      new_language_init="typology" if typology else "mean",
  )
  grown, _ = create_model(spec, mesh, load_pretrained=load_pretrained, strict_attention=False)
  trainable, _ = merge_trainable(grown.trainable, nnx.to_pure_dict(parts.trainable))
  return spec, grown._replace(trainable=init_new_languages(spec, trainable))


def init_from_run(spec: RunSpec, trainable: Any, mesh: Mesh) -> Any:
  """`spec.init_from`: the fresh trainable state takes another run's trained values
  (`merge_trainable`); new language rows are then initialised per `spec.new_language_init`."""
  source = restore(spec.init_from, step=spec.init_from_step, mesh=mesh, load_pretrained=False)
  new, lines = merge_trainable(trainable, nnx.to_pure_dict(source.parts.trainable))
  logging.info("init_from %s step %d:\n%s", spec.init_from, source.step, "\n".join(lines))
  return init_new_languages(spec, new)


def merge_trainable(fresh: Any, saved: Any) -> tuple[Any, list[str]]:
  """`fresh` (a sharded trainable state) with `saved`'s values (a pytree of the same paths).

  Parameters of the same shape are copied; a table whose leading dimension grew (new language
  rows appended) takes the saved rows and keeps its fresh rows beyond them. Any other shape
  difference is an error. Returns the new state and one report line per non-trivial case.
  """
  old = flat_paths(saved)
  lines, errors = [], []

  def take(name: str, value):
    if name not in old:
      lines.append(f"  {name} {tuple(value.shape)}: not in the run, fresh init kept")
      return value
    prev = old[name]
    if prev.shape == value.shape:
      return jax.device_put(prev.astype(value.dtype), value.sharding)
    if prev.ndim == value.ndim and prev.shape[1:] == value.shape[1:]:
      n = min(prev.shape[0], value.shape[0])
      lines.append(
          f"  {name}: run {tuple(prev.shape)} -> model {tuple(value.shape)}: rows "
          f"0..{n - 1} from the run, rows {n}.. fresh"
      )
      return jax.device_put(value.at[:n].set(prev[:n].astype(value.dtype)), value.sharding)
    errors.append(f"  {name}: run {tuple(prev.shape)} vs model {tuple(value.shape)}")
    return value

  new = map_params(take, fresh)
  unused = sorted(set(old) - set(flat_paths(nnx.to_pure_dict(fresh))))
  if unused:
    lines.append("  in the run but not trainable here (ignored): " + ", ".join(unused))
  if errors:
    raise ValueError(
        "init_from: parameter shapes differ beyond new leading rows:\n" + "\n".join(errors)
    )
  return new, lines


def init_new_languages(spec: RunSpec, trainable: Any) -> Any:
  """Rows of `spec.new_languages` in the hypernetwork's language table, per
  `spec.new_language_init`: 'mean' of the other rows, 'random' (kept as initialised), or
  'typology' (zero: the language vector E[l] + z_l · W is then the typology projection; with
  language_source 'typology' there is no table and nothing to set)."""
  if not spec.new_languages or spec.new_language_init == "random":
    return trainable
  new_ids = [spec.languages.index(lang) for lang in spec.new_languages]

  def init(path: str, table):
    if not path.endswith("lang_embeddings") or table.ndim != 2:
      return table
    if spec.new_language_init == "typology":
      return table.at[np.asarray(new_ids)].set(0)
    old = np.setdiff1d(np.arange(table.shape[0]), new_ids)
    mean = table[old].mean(0)
    return table.at[np.asarray(new_ids)].set(jnp.broadcast_to(mean, (len(new_ids),) + mean.shape))

  return map_params(init, trainable)
