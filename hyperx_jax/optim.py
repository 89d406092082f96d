"""Trainable/frozen rules, AdamW with warm-up + linear decay, per-group learning rates.

Parameters are named by their `/`-joined NNX state path (`encoder/layers/attn_ln/scale`,
`adapters/generator/kernel`, `heads/ner/out/kernel`). Two regex tables in the config act on
these names; in both the first rule whose regex matches (`re.search`) wins:

- `config.trainable = [(regex, bool), ...]` decides what is trained. It must cover every
  `nnx.Param`: an unmatched parameter is an error that lists it. The model is split once into a
  trainable and a frozen state (`nnx.split(model, trainable_filter(...)[0], ...)`), and the
  train step differentiates only the trainable one (no gradients computed for frozen weights).
- `config.optim.lr_multipliers = [(regex, multiplier), ...]` scales the base learning rate per
  group (e.g. heads x100, hypernetwork x10, LayerNorms x1). Unmatched parameters get x1. The
  multiplier scales the whole AdamW step of the parameter (Adam update and decoupled weight
  decay), like a per-group `lr` in PyTorch; it is a stateless per-leaf constant, so the optimiser
  state is one Adam state (mu, nu) over the trainable parameters only.

Weight decay is decoupled (AdamW) and not applied to biases, LayerNorm scales/biases (every
parameter with ndim <= 1) or embedding tables (paths matching `NO_DECAY_PATTERN`: the
backbone's word/position/type embeddings and the hypernetwork's task/language/layer
embeddings): decaying a lookup table shrinks rarely seen rows (a language with little data)
towards zero, which is not a regulariser one wants.

Schedule (the original run): linear warm-up from 0 to `lr` over `warmup_steps`, then linear
decay to 0 at `total_steps`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hyperx_jax.config.sections import OptimSpec
from hyperx_jax.tree import map_params, path_str

NO_DECAY_PATTERN = r"embed"

Predicate = Callable[[tuple, Any], bool]


def _first_match(rules: Sequence[tuple[str, Any]], path: str) -> int:
  for i, (pattern, _) in enumerate(rules):
    if re.search(pattern, path):
      return i
  return -1


class TrainableReport(NamedTuple):
  """Per rule: how many parameter arrays and scalars it matched (first match wins)."""

  rules: tuple[tuple[str, bool], ...]
  arrays: tuple[int, ...]
  sizes: tuple[int, ...]

  def __str__(self) -> str:
    rows = [
        f"  {'train' if flag else 'freeze':6s} {pattern!r:40s} {n:5d} arrays {s:>14,d} params"
        for (pattern, flag), n, s in zip(self.rules, self.arrays, self.sizes)
    ]
    trained = sum(s for (_, flag), s in zip(self.rules, self.sizes) if flag)
    total = sum(self.sizes)
    return "\n".join(
        ["trainable rules:", *rows, f"  trainable {trained:,d} of {total:,d} parameters"]
    )


def _compile_rules(rules: Sequence[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
  out = []
  for i, rule in enumerate(rules):
    if len(rule) != 2:
      raise ValueError(f"rule {i} {rule!r}: expected (regex, value)")
    try:
      re.compile(rule[0])
    except re.error as e:
      raise ValueError(f"rule {i} {rule!r}: bad regex: {e}") from e
    out.append((rule[0], rule[1]))
  return tuple(out)


def trainable_filter(
    rules: Sequence[tuple[str, bool]], state: Any
) -> tuple[Predicate, TrainableReport]:
  """Checks that `rules` cover every `nnx.Param` of `state` (a module or state) and returns an
  NNX filter `(path, value) -> bool` (True for trainable params) plus a per-rule report."""
  rules = _compile_rules(rules)
  if isinstance(state, nnx.Module):
    state = nnx.state(state)
  arrays, sizes, unmatched = [0] * len(rules), [0] * len(rules), []
  for path, var in nnx.to_flat_state(state):
    if not isinstance(var, nnx.Param):
      continue
    name = path_str(path)
    i = _first_match(rules, name)
    if i < 0:
      unmatched.append(f"{name} {tuple(var.get_value().shape)}")
      continue
    arrays[i] += 1
    sizes[i] += math.prod(var.get_value().shape)
  if unmatched:
    raise ValueError(
        f"config.trainable matches no rule for {len(unmatched)} parameters "
        f"(add a rule; rules are {[r[0] for r in rules]}):\n  " + "\n  ".join(unmatched)
    )

  def predicate(path: tuple, value: Any) -> bool:
    if not isinstance(value, nnx.Param):
      return False
    i = _first_match(rules, path_str(path))
    return i >= 0 and bool(rules[i][1])

  return predicate, TrainableReport(rules, tuple(arrays), tuple(sizes))


def learning_rate_fn(spec: OptimSpec, total_steps: int) -> optax.Schedule:
  """Linear warm-up 0 -> lr over warmup_steps, then linear decay to 0 at total_steps."""
  lr, warmup = spec.lr, spec.warmup_steps
  if total_steps <= warmup:
    raise ValueError(f"total_steps ({total_steps}) must exceed optim.warmup_steps ({warmup})")
  return optax.join_schedules(
      [
          optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else optax.constant_schedule(lr),
          optax.linear_schedule(lr, 0.0, total_steps - warmup),
      ],
      [warmup],
  )


def lr_multipliers(rules: Optional[Sequence[tuple[str, float]]], params: Any) -> Any:
  """Per-leaf learning-rate multiplier (first matching regex, else 1.0), same tree as params."""
  rules = _compile_rules(rules or ())
  return map_params(
      lambda path, _: float(rules[i][1]) if (i := _first_match(rules, path)) >= 0 else 1.0, params
  )


def decay_mask(params: Any, no_decay_pattern: str = NO_DECAY_PATTERN) -> Any:
  """True where weight decay applies: matrices that are not embedding tables."""
  return map_params(
      lambda path, x: len(x.shape) > 1 and not re.search(no_decay_pattern, path), params
  )


def scale_by_tree(factors: Any) -> optax.GradientTransformation:
  """Multiplies each update by a constant per-leaf factor (stateless)."""

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def path_mask(pattern: str, params: Any) -> Any:
  """True for the parameters whose path matches `pattern` (re.search)."""
  return map_params(lambda path, _: bool(re.search(pattern, path)), params)


def scale_by_adam_per_task(
    tasks: Sequence[str], mask: Any, *, b1: float, b2: float, eps: float
) -> optax.GradientTransformationExtraArgs:
  """Adam with one (mu, nu, count) per task on the leaves where `mask` is True and one shared
  state elsewhere. `update(..., task=name)` uses and advances only that task's state, so a
  task's step on the shared hypernetwork is normalised by its own gradient statistics, not by
  those of the task with the largest gradients (masked LM, token-level losses)."""
  tasks = tuple(tasks)
  adam = lambda: optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
  shared = optax.masked(adam(), jax.tree.map(lambda m: not m, mask))
  own = optax.masked(adam(), mask)

  def init_fn(params):
    return {"shared": shared.init(params), "tasks": {t: own.init(params) for t in tasks}}

  def update_fn(updates, state, params=None, *, task: Optional[str] = None, **extra):
    del extra
    if task not in state["tasks"]:
      raise ValueError(f"per-task Adam needs update(..., task=one of {list(tasks)}), got {task!r}")
    updates, shared_state = shared.update(updates, state["shared"], params)
    updates, task_state = own.update(updates, state["tasks"][task], params)
    return updates, {"shared": shared_state, "tasks": {**state["tasks"], task: task_state}}

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def normalize_per_task(
    tasks: Sequence[str], mask: Any, *, decay: float = 0.99
) -> optax.GradientTransformationExtraArgs:
  """Divides task t's gradient on the `mask` leaves by a bias-corrected EMA of its own norm
  there, so every task reaches one shared Adam state with gradients of norm ~1."""
  tasks = tuple(tasks)

  def masked_norm(updates):
    squares = [
        jnp.sum(jnp.square(u)) for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(mask)) if m
    ]
    return jnp.sqrt(sum(squares)) if squares else jnp.float32(0)

  def init_fn(params):
    del params
    return {t: (jnp.zeros([], jnp.float32), jnp.zeros([], jnp.int32)) for t in tasks}

  def update_fn(updates, state, params=None, *, task: Optional[str] = None, **extra):
    del params, extra
    if task not in state:
      raise ValueError(f"per-task normalisation needs task=one of {list(tasks)}, got {task!r}")
    ema, count = state[task]
    count = count + 1
    ema = decay * ema + (1 - decay) * masked_norm(updates)
    scale = 1.0 / (ema / (1 - decay ** count.astype(jnp.float32)) + 1e-12)
    updates = jax.tree.map(lambda u, m: u * scale.astype(u.dtype) if m else u, updates, mask)
    return updates, {**state, task: (ema, count)}

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def make_optimizer(
    spec: OptimSpec,
    total_steps: int,
    trainable_state: Any,
    *,
    tasks: Sequence[str] = (),
    no_decay_pattern: str = NO_DECAY_PATTERN,
) -> optax.GradientTransformation:
  """Global-norm clipping -> [per-task gradient normalisation] -> Adam moments (shared, or per
  task on `spec.per_task_state`) -> decoupled weight decay (masked) -> per-group multiplier ->
  -lr(step). `trainable_state` (arrays or abstract) only supplies the paths. With a per-task
  option, `update` takes `task=` (the train step passes it) and `tasks` names them all."""
  if (spec.per_task_state or spec.per_task_grad_norm) and not tasks:
    raise ValueError("optim.per_task_state / per_task_grad_norm need the task names")
  chain = [optax.clip_by_global_norm(spec.clip_norm)] if spec.clip_norm else []
  if spec.per_task_grad_norm:
    chain.append(normalize_per_task(tasks, path_mask(spec.per_task_grad_norm, trainable_state)))
  adam_args = dict(b1=spec.b1, b2=spec.b2, eps=spec.eps)
  if spec.per_task_state:
    chain.append(
        scale_by_adam_per_task(tasks, path_mask(spec.per_task_state, trainable_state), **adam_args)
    )
  else:
    chain.append(optax.scale_by_adam(**adam_args))
  chain += [
      optax.add_decayed_weights(
          spec.weight_decay, mask=decay_mask(trainable_state, no_decay_pattern)
      ),
      scale_by_tree(lr_multipliers(spec.lr_multipliers, trainable_state)),
      optax.scale_by_learning_rate(learning_rate_fn(spec, total_steps)),
  ]
  return optax.chain(*chain)


def group_report(spec: OptimSpec, trainable_state: Any) -> str:
  """Learning-rate multiplier and weight decay per trainable parameter (for logs)."""
  mults = jax.tree.leaves(lr_multipliers(spec.lr_multipliers, trainable_state))
  decay = jax.tree.leaves(decay_mask(trainable_state))
  paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(trainable_state)[0]]
  return "\n".join(
      f"  {p}: lr x{m:g}{'' if d else ', no weight decay'}" for p, m, d in zip(paths, mults, decay)
  )
