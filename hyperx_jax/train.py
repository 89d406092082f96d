"""train_and_evaluate: the jitted train step, the loop, checkpoints, final evaluation.

Data flow (docs/architecture.md):

  config -> spec (checked once) -> every train and eval source read, labels checked -> mesh ->
  tokenizer -> model (`run.create_model`: abstract
  init -> shardings from logical axes -> sharded init -> pretrained encoder weights -> split
  trainable / frozen) -> optimizer -> resume (checkpoint in workdir > spec.init_from >
  pretrained init) -> loop -> final evaluation -> report.

The train step is a pure function of (trainable, opt_state, frozen, batch, step, rng): it
differentiates only `trainable`, donates (trainable, opt_state), never donates or differentiates
the frozen backbone, and folds the step into the dropout RNG. The task name is static (one
compile per task: heads differ in shape), task / language ids are traced. A step whose loss or
gradient norm is not finite leaves the state unchanged and is reported; the loop then stops
with the last good checkpoint intact.

The run directory is changed only once the run has passed everything a bad config or input can
fail (the config check, the saved-config check, the data read, the model build): only then are
checkpoints restored (an unreadable latest step is moved aside), config.json written and the
metric writer opened. Metrics are flushed at every log step.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from hyperx_jax import aot, checkpoint
from hyperx_jax import diagnostics as diag
from hyperx_jax import evaluate, faults, optim, provenance, run, sharding
from hyperx_jax import tokenizer as tokenizers
from hyperx_jax import writers
from hyperx_jax.config import RunSpec, changes, environment
from hyperx_jax.config.vocabulary import DEV, MLM
from hyperx_jax.data import pipeline
from hyperx_jax.models import losses

Batch = Mapping[str, Any]


class TrainState(NamedTuple):
  """Everything the loop carries between steps (frozen weights are separate)."""

  step: int
  trainable: Any  # nnx.State of the trainable params
  opt_state: Any
  rng: jax.Array  # base PRNG key; step i uses fold_in(rng, i)


# --------------------------------------------------------------------------- train step


def global_norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree)


def make_train_step(
    graphdef: Any,
    tx: optax.GradientTransformation,
    state_shardings: tuple[Any, Any, Any],
    mesh: Mesh,
    *,
    diagnostics: bool = False,
    groups: Optional[Mapping[str, int]] = None,
):
  """The jitted step: (trainable, opt_state, frozen, batch, step, rng, task) ->
  (trainable, opt_state, metrics). `task` (a name) is static; everything else is traced.
  `groups`: task -> the (task, language) groups its batches hold (default 1; fixed per task,
  so still one compile per task). `diagnostics` adds the `diagnostics.py` measurements."""
  groups = dict(groups or {})
  trainable_sh, opt_sh, frozen_sh = state_shardings
  replicated = sharding.replicated(mesh)
  batch_sh = sharding.batch_sharding(mesh)

  def train_step(trainable, opt_state, frozen, batch, step, rng, task: str):
    dropout_rng = jax.random.fold_in(rng, step)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, frozen)
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # for splash's shard_map
        return losses.compute_loss(model, batch, task, dropout_rng, groups.get(task, 1))

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, new_opt_state = tx.update(grads, opt_state, trainable, task=task)
    new_trainable = optax.apply_updates(trainable, updates)
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step keeps the previous state, so a later save never writes NaNs.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_trainable = keep(new_trainable, trainable)
    new_opt_state = keep(new_opt_state, opt_state)
    metrics = {
        "loss": loss,
        "accuracy": aux["accuracy"],
        "count": aux["count"],
        "grad_norm": grad_norm,
        "param_norm": global_norm(new_trainable),
        "finite": finite,
    }
    if diagnostics:
      model = nnx.merge(graphdef, trainable, frozen)
      stack = model.adapter_weights(
          batch["task_id"][:1], batch["lang_id"][:1], skip_task_adapter=model.task_kind(task) == MLM
      )
      metrics.update(diag.gradient_stats(grads))
      metrics.update(diag.adapter_stats(stack))
      if model.method == "hyperx":
        metrics.update(
            diag.projection_stats(
                model.adapters.projections(batch["task_id"][:1], batch["lang_id"][:1])
            )
        )
    return new_trainable, new_opt_state, metrics

  return jax.jit(
      train_step,
      static_argnums=(6,),
      in_shardings=(trainable_sh, opt_sh, frozen_sh, batch_sh, replicated, replicated),
      out_shardings=(trainable_sh, opt_sh, replicated),
      donate_argnums=(0, 1),
  )


def init_optimizer(tx: optax.GradientTransformation, trainable: Any, mesh: Mesh) -> Any:
  """Optimizer state laid out like the parameters it tracks (sharding propagated by jit);
  scalars such as the step count are replicated over the mesh."""
  state = jax.jit(tx.init)(trainable)
  everywhere = sharding.replicated(mesh)
  return jax.tree.map(
      lambda x: x
      if x.sharding.device_set == everywhere.device_set
      else jax.device_put(x, everywhere),
      state,
  )


# ------------------------------------------------------------------------------ batches


def global_batch(local: Batch, mesh: Mesh) -> dict[str, jax.Array]:
  """Per-host numpy batch -> global jax.Arrays split over the data-parallel mesh axes."""
  return pipeline.make_global_batch(local, sharding.batch_sharding(mesh))


def batch_task(local: Batch, names: list[str]) -> str:
  """The task of a one-pair training batch (the same on every host)."""
  task = getattr(local, "task", None)
  return task if task is not None else names[int(np.asarray(local["task_id"])[0])]


# ------------------------------------------------------------------------------- logging


class StepStats:
  """The on-device step metrics between two log points (fetched to the host only then)."""

  def __init__(self):
    self.pending: list[tuple[str, dict[str, jax.Array]]] = []

  def add(self, task: str, metrics: dict[str, jax.Array]) -> None:
    self.pending.append((task, metrics))

  def nonfinite(self) -> int:
    """How many pending steps had a NaN/Inf loss or gradient norm (and were skipped)."""
    return sum(not bool(f) for f in jax.device_get([m["finite"] for _, m in self.pending]))

  def summary(self) -> dict[str, float]:
    """Means over the interval (loss per task too); clears the interval."""
    fetched = jax.device_get([m for _, m in self.pending])
    tasks = [t for t, _ in self.pending]
    out = {
        key: float(np.mean([m[key] for m in fetched])) for key in ("loss", "accuracy", "grad_norm")
    }
    out["param_norm"] = float(fetched[-1]["param_norm"])
    for task in sorted(set(tasks)):
      out[f"loss/{task}"] = float(np.mean([m["loss"] for t, m in zip(tasks, fetched) if t == task]))
    out.update(diag.interval_summary(tasks, fetched))
    self.pending = []
    return out


def tb_names(prefix: str, scalars: Mapping[str, float]) -> dict[str, float]:
  """'ner:tr/f1' -> 'eval/ner/tr/f1' (TensorBoard tags cannot hold ':')."""
  return {f'{prefix}/{k.replace(":", "/")}': v for k, v in scalars.items()}


# --------------------------------------------------------------------------- resume order


def restore_or_init(
    spec: RunSpec,
    ckpt: checkpoint.Checkpointer,
    parts: run.ModelParts,
    tx: optax.GradientTransformation,
    train_iter: Any,
    mesh: Mesh,
) -> TrainState:
  """Resume order: checkpoint in workdir > spec.init_from > pretrained init.

  The latest readable checkpoint is used: an unreadable step, or one whose data state the
  iterator rejects, is moved aside (and saved again when training passes it)."""
  trainable = parts.trainable
  fresh_rng = jax.random.key(spec.seed)
  if ckpt.latest_step() is not None:
    # Restore targets: the fresh optimizer state carries the shardings to restore into.
    opt_state = init_optimizer(tx, trainable, mesh)
    r = ckpt.restore(
        abstract_trainable=trainable,
        abstract_opt_state=opt_state,
        allow_fallback=True,
        check=lambda r: train_iter.set_state(r["data_state"]),
    )
    logging.info("resumed from %s at step %d", ckpt.directory, r["step"])
    rng = r["rng"] if r["rng"] is not None else fresh_rng
    return TrainState(r["step"], r["trainable"], r["opt_state"], rng)
  if spec.init_from:
    trainable = run.init_from_run(spec, trainable, mesh)
    logging.info("initialised the trainable state from %s", spec.init_from)
  return TrainState(0, trainable, init_optimizer(tx, trainable, mesh), fresh_rng)


# ---------------------------------------------------------------------------- the loop


class Trainer:
  """The pieces of one run, built in data-flow order; `run()` trains and evaluates."""

  def __init__(
      self, config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
  ):
    # Checks, data and model first: nothing in `workdir` changes if any of them fails. Every
    # train and eval source is read and its labels checked before the tokenizer and weights.
    self.spec = spec = environment.parse(config, jax.device_count())
    run.check_saved_config(config, workdir, allow_change=allow_config_change)
    raw = pipeline.read_streams(spec.train_streams + spec.eval_streams)
    train_raw, eval_raw = raw[: len(spec.train_streams)], raw[len(spec.train_streams) :]
    self.workdir = workdir
    self.config = config
    self.is_primary = jax.process_index() == 0
    provenance.code_version()  # the code as it starts (git state read once, then kept)
    self.mesh = sharding.make_mesh(spec.mesh)
    self.task_names = list(spec.tasks)
    self.tokenizer = tokenizers.load_tokenizer(spec.tokenizer_path)
    pipeline.log_truncation(
        spec.train_streams + spec.eval_streams, raw, self.tokenizer, spec.data.max_length
    )
    self.parts, param_report = run.create_model(spec, self.mesh)
    logging.info("mesh %s", dict(self.mesh.shape))
    if self.is_primary:
      print(param_report, flush=True)
    self.tx = optim.make_optimizer(
        spec.optim, spec.total_steps, self.parts.trainable, tasks=self.task_names
    )
    self.lr_fn = optim.learning_rate_fn(spec.optim, spec.total_steps)
    self.train_iter = pipeline.build_train_pipeline(
        spec.train_streams,
        spec.data,
        spec.seed,
        self.tokenizer,
        jax.process_index(),
        jax.process_count(),
        examples=train_raw,
    )
    self.eval_data = evaluate.datasets_by_role(spec, self.tokenizer, eval_raw)
    # The run directory changes from here on.
    c = spec.checkpoint
    self.ckpt = checkpoint.Checkpointer(
        workdir, keep=c.keep, async_save=c.async_save, best_metric=c.best_metric
    )
    self.state = restore_or_init(spec, self.ckpt, self.parts, self.tx, self.train_iter, self.mesh)
    run.save_config(config, workdir)
    trainable_sh = run.shardings_of(self.state.trainable)
    frozen_sh = run.shardings_of(self.parts.frozen)
    self.train_step = aot.AheadOfTime(
        make_train_step(
            self.parts.graphdef,
            self.tx,
            (trainable_sh, run.shardings_of(self.state.opt_state), frozen_sh),
            self.mesh,
            diagnostics=spec.diagnostics,
            groups={task: spec.groups_of(task) for task in spec.tasks},
        ),
        "train step (task {})",
        static_argnum=6,
    )
    self.eval_step = evaluate.make_eval_step(
        self.parts.graphdef, self.mesh, trainable_sh, frozen_sh
    )
    self.writer = writers.MetricWriter(workdir, is_primary=self.is_primary)
    write_config_summary(self.writer, config, self.state.step)
    self.preempted = checkpoint.install_preemption_handler()

  # -- evaluation

  def evaluate_dev(self) -> dict[str, dict[str, Any]]:
    """The dev pairs on the current state (periodic evaluation; selects the checkpoint)."""
    return evaluate.evaluate_all(
        self.eval_step,
        self.state.trainable,
        self.parts.frozen,
        self.eval_data[DEV],
        self.spec,
        self.mesh,
    )

  def selected_step(self) -> tuple[int, Optional[str]]:
    """The checkpoint the run reports: the best by `checkpoint.best_metric` (a dev metric)
    among those saved with it, else the final step; and the metric that chose it."""
    best = self.ckpt.best_step()
    if best is None:
      return self.state.step, None
    return best, self.spec.checkpoint.best_metric

  def final_evaluation(self) -> tuple[evaluate.Evaluation, dict[str, Any]]:
    """Dev and test pairs on the selected checkpoint (test pairs are evaluated only here)."""
    step, by = self.selected_step()
    trainable = self.state.trainable
    if step != self.state.step:
      trainable = self.ckpt.restore(step, abstract_trainable=trainable)["trainable"]
    logging.info(
        "final evaluation at step %d (%s)", step, f"best {by} on dev" if by else "the last step"
    )
    evaluation = evaluate.evaluate_roles(
        self.eval_step, trainable, self.parts.frozen, self.eval_data, self.spec, self.mesh
    )
    return evaluation, evaluate.selection(step, evaluation, by)

  # -- checkpoints

  def save(self, eval_scalars: Optional[dict[str, float]] = None, force: bool = False) -> None:
    s = self.state
    if s.step in self.ckpt.all_steps():
      return  # e.g. a preemption right after a periodic save
    self.ckpt.save(
        s.step,
        trainable=s.trainable,
        opt_state=s.opt_state,
        rng=s.rng,
        data_state=self.train_iter.get_state(),
        metrics=eval_scalars,
        force=force,
    )

  def _stop_on_nonfinite(self, stats: StepStats) -> None:
    bad = stats.nonfinite()
    if bad:
      self.ckpt.wait()
      raise writers.NonFiniteError(
          f"loss or gradient norm became NaN/Inf in {bad} of the last {len(stats.pending)} "
          f"steps (up to step {self.state.step}); those updates were skipped and the run "
          f"stopped. Last checkpoint: step {self.ckpt.latest_step()} in {self.ckpt.directory} "
          "(intact). Lower optim.lr, check the data, or use float32."
      )

  def _log(
      self, stats: StepStats, progress: writers.ProgressLogger, clock: writers.TrainingClock
  ) -> None:
    """The interval's means to the metric files (flushed: a kill loses at most one interval)
    and the console."""
    step = self.state.step
    self._stop_on_nonfinite(stats)
    scalars = stats.summary()
    scalars["lr"] = float(self.lr_fn(step - 1))
    if self.spec.data.packed:  # below batch_size where packed_rows is too few
      scalars["examples_per_batch"] = self.train_iter.examples_per_batch()
    self.writer.write_scalars(step, scalars)
    self.writer.flush()
    if self.is_primary:
      progress.log(step, scalars, clock.seconds())

  def _paused(self, clock: writers.TrainingClock):
    """`clock` paused, once the steps already dispatched have run (they are training time)."""
    jax.block_until_ready(self.state.trainable)
    return clock.paused()

  # -- the loop

  def train(self) -> bool:
    """Trains to spec.total_steps; returns False when stopped by preemption (saved)."""
    c = self.spec
    stats = StepStats()
    clock = writers.TrainingClock()
    progress = writers.ProgressLogger(
        c.total_steps, batch_size=c.data.batch_size, start_step=self.state.step
    )
    try:
      with writers.console_lines_above_bars():
        return self._loop(stats, clock, progress)
    finally:
      progress.close()

  def _loop(
      self, stats: StepStats, clock: writers.TrainingClock, progress: writers.ProgressLogger
  ) -> bool:
    c = self.spec
    while self.state.step < c.total_steps:
      if self.preempted() or self.ckpt.reached_preemption(self.state.step):
        self._stop_on_nonfinite(stats)
        self.save(force=True)
        self.ckpt.wait()
        logging.warning("preempted: saved step %d, exiting", self.state.step)
        return False
      local = next(self.train_iter)
      task = batch_task(local, self.task_names)
      batch = global_batch(local, self.mesh)
      s = self.state
      frozen = faults.poison_if_requested(s.step + 1, self.parts.frozen)  # test-only
      args = (s.trainable, s.opt_state, frozen, batch, np.int32(s.step), s.rng, task)
      if task not in self.train_step:
        with self._paused(clock):  # compiling is not training
          self.train_step.compile(*args)
      trainable, opt_state, metrics = self.train_step(*args)
      faults.inject("train_step", s.step + 1)  # test-only: kill/term mid-step (faults.py)
      self.state = s._replace(step=s.step + 1, trainable=trainable, opt_state=opt_state)
      stats.add(task, metrics)
      step = self.state.step
      progress.advance(step)
      if step % c.log_every_steps == 0 or step == c.total_steps:
        self._log(stats, progress, clock)
      eval_scalars = None
      # The last step is evaluated here too when it competes for selection; the final
      # evaluation below always covers it.
      last_competes = c.checkpoint.best_metric is not None and step == c.total_steps
      if (
          self.eval_data[DEV]
          and step % c.eval_every_steps == 0
          and (step < c.total_steps or last_competes)
      ):
        with self._paused(clock):
          eval_scalars = evaluate.flat_scalars(self.evaluate_dev())
          self.writer.write_scalars(step, tb_names("eval", eval_scalars))
          self.writer.flush()
      if step % c.checkpoint.every_steps == 0 or step == c.total_steps:
        self._stop_on_nonfinite(stats)
        with self._paused(clock):
          self.save(eval_scalars, force=step == c.total_steps)
    self.writer.flush()
    return True

  def run(self) -> Optional[dict[str, dict[str, Any]]]:
    """Train, then the final evaluation on every eval pair -> report. None if preempted."""
    try:
      if not self.train():
        return None
      self.ckpt.wait()  # results.* come from a committed checkpoint: a rerun reproduces them
      if not self.spec.eval_streams:
        logging.info(
            "trained to step %d; the config has no eval streams, so there is nothing to "
            "evaluate or report (the trained parameters are in %s)",
            self.state.step,
            self.ckpt.directory,
        )
        return {}
      evaluation, chosen = self.final_evaluation()
      self.writer.write_scalars(
          self.state.step, tb_names("final", evaluate.flat_scalars(evaluation.table))
      )
      run.write_results(
          self.config, self.spec, self.workdir, evaluation.table, chosen["step"], chosen
      )
      return evaluation.table
    finally:
      self.ckpt.wait()
      self.ckpt.close()
      self.writer.close()
      self.preempted.uninstall()


def write_config_summary(
    writer: writers.MetricWriter, config: ml_collections.ConfigDict, step: int
) -> None:
  """The config as JSON in TensorBoard's Text tab and its scalar fields as hyperparameters
  (HParams tab, compared by the training loss), at the step the run starts from."""
  text = config.to_json_best_effort(indent=2)
  writer.write_text(step, "config", "\n".join("    " + line for line in text.splitlines()))
  hparams = {
      name: value
      for name, value in changes.config_leaves(json.loads(text)).items()
      if isinstance(value, (bool, int, float, str))
  }
  writer.write_hparams(hparams, metrics=["loss"])
  writer.flush()


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> Optional[dict[str, dict[str, Any]]]:
  """Trains per `config` in `workdir` (resuming if it holds a checkpoint), then evaluates every
  (task, language) eval pair and writes results.{json,md,csv,png}. Returns the results, or
  None when a preemption signal stopped the run (after saving). In a workdir trained with
  another config (beyond config.changes.RESUMABLE_CHANGES) it refuses unless `allow_config_change`.
  """
  return Trainer(config, workdir, allow_config_change=allow_config_change).run()
