"""train_and_evaluate: model state, the jitted train step, the loop, checkpoints, final eval.

Data flow (DESIGN.md §2):

  validate config -> mesh -> tokenizer -> model (abstract init -> shardings from logical axes ->
  sharded init -> pretrained encoder weights) -> split trainable / frozen -> optimizer ->
  resume (checkpoint in workdir > config.init_from > pretrained init) -> loop -> final eval.

The train step is a pure function of (trainable, opt_state, frozen, batch, step, rng): it
differentiates only `trainable`, donates (trainable, opt_state), never donates or differentiates
the frozen backbone, and folds the step into the dropout RNG. The task name is static (one
compile per task: heads differ in shape), task / language ids are traced. A step whose loss or
gradient norm is not finite leaves the state unchanged and is reported; the loop then stops
with the last good checkpoint intact.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from hyperx_jax import (checkpoint, config_utils, evaluate, optim, report, sharding, tokenizer,
                        writers)
from hyperx_jax.data import pipeline
from hyperx_jax.models import model as model_lib
from hyperx_jax.models import weights

Batch = Mapping[str, Any]


class TrainState(NamedTuple):
  """Everything the loop carries between steps (frozen weights are separate)."""

  step: int
  trainable: Any  # nnx.State of the trainable params
  opt_state: Any
  rng: jax.Array  # base PRNG key; step i uses fold_in(rng, i)


class ModelParts(NamedTuple):
  graphdef: Any
  trainable: Any
  frozen: Any


# ------------------------------------------------------------------------------- model


def _make_model_fn(config: ml_collections.ConfigDict) -> Callable[[], nnx.Module]:
  return lambda: model_lib.build_model(config, rngs=nnx.Rngs(params=config.seed,
                                                             dropout=config.seed))


def abstract_model(config: ml_collections.ConfigDict) -> nnx.Module:
  """The model with ShapeDtypeStructs for arrays (nothing allocated)."""
  return nnx.eval_shape(_make_model_fn(config))


def trainable_predicate(config: ml_collections.ConfigDict, model: nnx.Module):
  """The trainable filter; fails naming config.trainable when a parameter matches no rule."""
  try:
    return optim.trainable_filter(config.trainable, model)
  except ValueError as e:
    raise config_utils.ConfigError(str(e)) from None


def create_model(config: ml_collections.ConfigDict, mesh: Mesh, *,
                 load_pretrained: bool = True) -> tuple[ModelParts, str]:
  """Sharded init + pretrained encoder weights, split into (graphdef, trainable, frozen).

  Returns the parts and a printable parameter report.
  """
  predicate, rule_report = trainable_predicate(config, abstract_model(config))
  model = sharding.sharded_init(_make_model_fn(config), mesh, config.logical_axis_rules)
  if load_pretrained and config.model.checkpoint:
    _load_pretrained(model, config)
  graphdef, trainable, frozen = nnx.split(model, predicate, ...)
  trainable_paths = {optim.path_str(p) for p, _ in nnx.to_flat_state(trainable)}
  report = model_lib.parameter_report(model, lambda path: path in trainable_paths)
  return ModelParts(graphdef, trainable, frozen), f'{report}\n{rule_report}'


def _load_pretrained(model: nnx.Module, config: ml_collections.ConfigDict) -> None:
  encoder_shardings = jax.tree.map(lambda x: x.sharding, nnx.state(model.encoder, nnx.Param))
  weights.load_encoder_weights(model.encoder, config.model.checkpoint, shardings=encoder_shardings)
  mlm_tasks = [n for n in config_utils.task_names(config) if config.tasks[n].kind == 'mlm']
  if mlm_tasks:
    head_weights = weights.load_mlm_head_weights(config.model.checkpoint)
    for name in mlm_tasks:
      if head_weights is not None and hasattr(model.heads[name], 'load_hf'):
        model.heads[name].load_hf(head_weights)


def shardings_of(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.sharding, tree)


# --------------------------------------------------------------------------- train step


def global_norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree)


def make_train_step(graphdef: Any, tx: optax.GradientTransformation,
                    state_shardings: tuple[Any, Any, Any], mesh: Mesh):
  """The jitted step: (trainable, opt_state, frozen, batch, step, rng, task) ->
  (trainable, opt_state, metrics). `task` (a name) is static; everything else is traced."""
  trainable_sh, opt_sh, frozen_sh = state_shardings
  replicated = sharding.replicated(mesh)
  batch_sh = sharding.batch_sharding(mesh)

  def train_step(trainable, opt_state, frozen, batch, step, rng, task: str):
    dropout_rng = jax.random.fold_in(rng, step)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, frozen)
      return model_lib.compute_loss(model, batch, task, dropout_rng)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, new_opt_state = tx.update(grads, opt_state, trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step keeps the previous state, so a later save never writes NaNs.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_trainable = keep(new_trainable, trainable)
    new_opt_state = keep(new_opt_state, opt_state)
    metrics = {'loss': loss, 'accuracy': aux['accuracy'], 'count': aux['count'],
               'grad_norm': grad_norm, 'param_norm': global_norm(new_trainable),
               'finite': finite}
    return new_trainable, new_opt_state, metrics

  return jax.jit(train_step, static_argnums=(6,),
                 in_shardings=(trainable_sh, opt_sh, frozen_sh, batch_sh, replicated, replicated),
                 out_shardings=(trainable_sh, opt_sh, replicated),
                 donate_argnums=(0, 1))


def init_optimizer(tx: optax.GradientTransformation, trainable: Any, mesh: Mesh) -> Any:
  """Optimizer state laid out like the parameters it tracks (sharding propagated by jit);
  scalars such as the step count are replicated over the mesh."""
  state = jax.jit(tx.init)(trainable)
  everywhere = sharding.replicated(mesh)
  return jax.tree.map(lambda x: x if x.sharding.device_set == everywhere.device_set
                      else jax.device_put(x, everywhere), state)


# ------------------------------------------------------------------------------ batches


def global_batch(local: Batch, mesh: Mesh) -> dict[str, jax.Array]:
  """Per-host numpy batch -> global jax.Arrays split over the data-parallel mesh axes."""
  return pipeline.make_global_batch(local, sharding.batch_sharding(mesh))


def batch_task(local: Batch, names: list[str]) -> str:
  """The task of a one-pair training batch (the same on every host)."""
  task = getattr(local, 'task', None)
  return task if task is not None else names[int(np.asarray(local['task_id'])[0])]


# ------------------------------------------------------------------------------- logging


class StepStats:
  """The on-device step metrics between two log points (fetched to the host only then)."""

  def __init__(self):
    self.pending: list[tuple[str, dict[str, jax.Array]]] = []

  def add(self, task: str, metrics: dict[str, jax.Array]) -> None:
    self.pending.append((task, metrics))

  def nonfinite(self) -> int:
    """How many pending steps had a NaN/Inf loss or gradient norm (and were skipped)."""
    return sum(not bool(f) for f in jax.device_get([m['finite'] for _, m in self.pending]))

  def summary(self) -> dict[str, float]:
    """Means over the interval (loss per task too); clears the interval."""
    fetched = jax.device_get([m for _, m in self.pending])
    tasks = [t for t, _ in self.pending]
    out = {key: float(np.mean([m[key] for m in fetched]))
           for key in ('loss', 'accuracy', 'grad_norm')}
    out['param_norm'] = float(fetched[-1]['param_norm'])
    for task in sorted(set(tasks)):
      out[f'loss/{task}'] = float(np.mean([m['loss'] for t, m in zip(tasks, fetched)
                                           if t == task]))
    self.pending = []
    return out


def tb_names(prefix: str, scalars: Mapping[str, float]) -> dict[str, float]:
  """'ner:tr/f1' -> 'eval/ner/tr/f1' (TensorBoard tags cannot hold ':')."""
  return {f'{prefix}/{k.replace(":", "/")}': v for k, v in scalars.items()}


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / 'config.json').write_text(config.to_json_best_effort(indent=2))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved into its workdir (for evaluation and few-shot `init_from`)."""
  path = epath.Path(workdir) / 'config.json'  # local or gs://
  if not path.exists():
    raise FileNotFoundError(f'{path} not found: is {workdir!r} a training workdir?')
  return ml_collections.ConfigDict(json.loads(path.read_text()))


# --------------------------------------------------------------------------- resume order


def fresh_rng(config: ml_collections.ConfigDict) -> jax.Array:
  return jax.random.key(config.seed)


def init_new_languages(config: ml_collections.ConfigDict, trainable: Any) -> Any:
  """Rows of `config.new_languages` in the hypernetwork's language table, from
  `config.new_language_init`: 'mean' of the other rows, or 'random' (kept as initialised)."""
  if not config.new_languages or config.new_language_init == 'random':
    return trainable
  if config.new_language_init != 'mean':
    raise config_utils.ConfigError(f"config.new_language_init: {config.new_language_init!r} is "
                                   "not one of ['mean', 'random']")
  new_ids = [list(config.languages).index(lang) for lang in config.new_languages]

  def init(path: str, table):
    if not path.endswith('lang_embeddings') or table.ndim != 2:
      return table
    old = np.setdiff1d(np.arange(table.shape[0]), new_ids)
    mean = table[old].mean(0)
    return table.at[np.asarray(new_ids)].set(jnp.broadcast_to(mean, (len(new_ids),) + mean.shape))

  return optim.map_params(init, trainable)


def restore_or_init(config: ml_collections.ConfigDict, ckpt: Any, parts: ModelParts,
                    tx: optax.GradientTransformation, train_iter: Any, mesh: Mesh) -> TrainState:
  """Resume order (STYLE.md 12): checkpoint in workdir > config.init_from > pretrained init."""
  trainable = parts.trainable
  if ckpt.latest_step() is not None:
    # Restore targets: the fresh optimizer state carries the shardings to restore into.
    opt_state = init_optimizer(tx, trainable, mesh)
    r = ckpt.restore(abstract_trainable=trainable, abstract_opt_state=opt_state)
    if r['data_state']:
      train_iter.set_state(r['data_state'])
    logging.info('resumed from %s at step %d', ckpt.directory, r['step'])
    rng = r['rng'] if r['rng'] is not None else fresh_rng(config)
    return TrainState(r['step'], r['trainable'], r['opt_state'], rng)
  if config.init_from:
    trainable, _ = checkpoint.restore_from_run(config.init_from, trainable=trainable)
    trainable = init_new_languages(config, trainable)
    logging.info('initialised the trainable state from %s', config.init_from)
  return TrainState(0, trainable, init_optimizer(tx, trainable, mesh), fresh_rng(config))


# ---------------------------------------------------------------------------- the loop


def write_report(config: ml_collections.ConfigDict, out_dir: str,
                 results: Mapping[str, Mapping[str, Any]]) -> None:
  """results.{json,md,csv,png} (process 0) and the table on the console."""
  if jax.process_index() != 0:
    return
  report.write_results(out_dir, results, method=METHOD_NAMES.get(config.method, config.method))
  print(report.format_table(results), flush=True)


METHOD_NAMES = {'hyperx': 'Hyper-X', 'task_adapters': 'Task adapters', 'madx': 'MAD-X',
                'full_finetune': 'Full fine-tuning'}


class Trainer:
  """The pieces of one run, built in data-flow order; `run()` trains and evaluates."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    config_utils.validate(config, jax.device_count())
    self.config, self.workdir = config, workdir
    self.is_primary = jax.process_index() == 0
    self.mesh = sharding.make_mesh(config.mesh)
    self.task_names = config_utils.task_names(config)
    self.tokenizer = tokenizer.load_tokenizer(config.tokenizer or config.model.checkpoint)
    self.parts, param_report = create_model(config, self.mesh)
    logging.info('mesh %s', dict(self.mesh.shape))
    if self.is_primary:
      print(param_report, flush=True)
    self.tx = optim.make_optimizer(config.optim, config.total_steps, self.parts.trainable)
    self.lr_fn = optim.learning_rate_fn(config.optim, config.total_steps)
    self.train_iter = pipeline.build_train_pipeline(config, self.tokenizer, jax.process_index(),
                                                    jax.process_count())
    self.ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep,
                                        async_save=config.checkpoint.async_save,
                                        best_metric=config.checkpoint.best_metric)
    self.state = restore_or_init(config, self.ckpt, self.parts, self.tx, self.train_iter,
                                 self.mesh)
    save_config(config, workdir)
    trainable_sh = shardings_of(self.state.trainable)
    frozen_sh = shardings_of(self.parts.frozen)
    self.train_step = make_train_step(self.parts.graphdef, self.tx,
                                      (trainable_sh, shardings_of(self.state.opt_state),
                                       frozen_sh), self.mesh)
    self.eval_step = evaluate.make_eval_step(self.parts.graphdef, self.mesh, trainable_sh,
                                             frozen_sh)
    self.eval_data = None
    self.writer = writers.MetricWriter(workdir, is_primary=self.is_primary)
    self.progress = writers.ProgressLogger(config.total_steps, batch_size=config.data.batch_size)
    self.preempted = checkpoint.install_preemption_handler()

  # -- evaluation

  def evaluate(self, pairs=None) -> dict[str, dict[str, Any]]:
    if self.eval_data is None:
      self.eval_data = pipeline.build_eval_datasets(self.config, self.tokenizer)
    return evaluate.evaluate_all(self.eval_step, self.state.trainable, self.parts.frozen,
                                 self.eval_data, self.config, self.mesh, pairs)

  # -- checkpoints

  def save(self, eval_scalars: Optional[dict[str, float]] = None, force: bool = False) -> None:
    s = self.state
    if s.step in self.ckpt.all_steps():
      return  # e.g. a preemption right after a periodic save
    self.ckpt.save(s.step, trainable=s.trainable, opt_state=s.opt_state, rng=s.rng,
                   data_state=self.train_iter.get_state(), metrics=eval_scalars, force=force)

  def _stop_on_nonfinite(self, stats: StepStats) -> None:
    bad = stats.nonfinite()
    if bad:
      self.ckpt.wait()
      raise writers.NonFiniteError(
          f'loss or gradient norm became NaN/Inf in {bad} of the last {len(stats.pending)} '
          f'steps (up to step {self.state.step}); those updates were skipped and the run '
          f'stopped. Last checkpoint: step {self.ckpt.latest_step()} in {self.ckpt.directory} '
          '(intact). Lower optim.lr, check the data, or use float32.')

  # -- the loop

  def train(self) -> bool:
    """Trains to config.total_steps; returns False when stopped by preemption (saved)."""
    c = self.config
    stats = StepStats()
    while self.state.step < c.total_steps:
      if self.preempted() or self.ckpt.reached_preemption(self.state.step):
        self._stop_on_nonfinite(stats)
        self.save(force=True)
        self.ckpt.wait()
        logging.warning('preempted: saved step %d, exiting', self.state.step)
        return False
      local = next(self.train_iter)
      task = batch_task(local, self.task_names)
      batch = global_batch(local, self.mesh)
      s = self.state
      trainable, opt_state, metrics = self.train_step(s.trainable, s.opt_state, self.parts.frozen,
                                                      batch, np.int32(s.step), s.rng, task)
      self.state = s._replace(step=s.step + 1, trainable=trainable, opt_state=opt_state)
      stats.add(task, metrics)
      step = self.state.step
      if step % c.log_every_steps == 0 or step == c.total_steps:
        self._stop_on_nonfinite(stats)
        scalars = stats.summary()
        scalars['lr'] = float(self.lr_fn(step - 1))
        self.writer.write_scalars(step, scalars)
        if self.is_primary:
          self.progress.log(step, scalars)
      eval_scalars = None
      if step % c.eval_every_steps == 0 and step < c.total_steps:
        eval_scalars = evaluate.flat_scalars(self.evaluate())
        self.writer.write_scalars(step, tb_names('eval', eval_scalars))
      if step % c.checkpoint.every_steps == 0 or step == c.total_steps:
        self._stop_on_nonfinite(stats)
        self.save(eval_scalars, force=step == c.total_steps)
    self.writer.flush()
    return True

  def run(self) -> Optional[dict[str, dict[str, Any]]]:
    """Train, then the final evaluation on every eval pair -> report. None if preempted."""
    try:
      if not self.train():
        return None
      results = self.evaluate()
      self.writer.write_scalars(self.state.step,
                                tb_names('final', evaluate.flat_scalars(results)))
      write_report(self.config, self.workdir, results)
      return results
    finally:
      self.ckpt.wait()
      self.ckpt.close()
      self.writer.close()
      self.preempted.uninstall()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *, pairs=None,
                        step: Optional[int] = None) -> dict[str, dict[str, Any]]:
  """Evaluates a run's latest (or given) checkpoint on its eval pairs (all, or `pairs`)."""
  config_utils.validate(config, jax.device_count())
  mesh = sharding.make_mesh(config.mesh)
  tok = tokenizer.load_tokenizer(config.tokenizer or config.model.checkpoint)
  parts, _ = create_model(config, mesh)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, async_save=False)
  try:
    restored = ckpt.restore(step, abstract_trainable=parts.trainable)
  finally:
    ckpt.close()
  logging.info('evaluating %s at step %d', workdir, restored['step'])
  eval_step = evaluate.make_eval_step(parts.graphdef, mesh, shardings_of(parts.trainable),
                                      shardings_of(parts.frozen))
  return evaluate.evaluate_all(eval_step, restored['trainable'], parts.frozen,
                               pipeline.build_eval_datasets(config, tok), config, mesh, pairs)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Optional[dict[str, dict[str, Any]]]:
  """Trains per `config` in `workdir` (resuming if it holds a checkpoint), then evaluates every
  (task, language) eval pair and writes results.{json,md,csv,png}. Returns the results, or
  None when a preemption signal stopped the run (after saving)."""
  return Trainer(config, workdir).run()
