"""Mesh from config, logical-axis rules -> shardings, sharded initialisation.

Modules are built without a mesh: every `nnx.Param` carries its logical axis names as
`out_sharding` metadata (the older spelling `sharding_names` is remapped to it by flax), e.g.
`('vocab', 'embed')`. One small rules table maps logical names to mesh axes (`data`, `fsdp`,
`tensor`), in the style of t5x's `standard_logical_axis_rules`:

    rules = [('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor'), ...]

A logical name may appear several times; the first entry whose mesh axes are still free in this
array's spec (and divide the dimension) wins. A mesh axis is never used twice in one spec, and a
dimension that the mesh axes do not divide stays replicated, so a tiny test model runs on any
mesh.

Initialisation never materialises unsharded parameters: `nnx.eval_shape` gives the abstract
state, `state_shardings` its placement, and `jax.jit(init, out_shardings=...)` creates every
array directly in its shards (`sharded_init`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence, Union

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from hyperx_jax.config.sections import MeshSpec
from hyperx_jax.config.vocabulary import DATA_AXES
from hyperx_jax.tree import is_variable

MeshAxes = Union[str, tuple[str, ...], None]
Rules = Sequence[tuple[str, MeshAxes]]


def make_mesh(mesh_spec: MeshSpec) -> Mesh:
  """A mesh spec (shape with at most one -1, axes) -> a Mesh with Auto (GSPMD) axis types.

  `jax.make_mesh` defaults to Explicit axes in current jax; the model code relies on Auto
  propagation from the parameters' and batch's shardings, so every axis is made Auto here.
  """
  shape, axes = tuple(mesh_spec.shape), tuple(mesh_spec.axes)
  resolved = mesh_spec.resolve(jax.device_count())
  if resolved is None:
    raise ValueError(
        f"mesh shape {shape} (axes {axes}) cannot be laid out on "
        f"{jax.device_count()} devices: one entry per axis, at most one -1, and "
        "the product must equal the device count"
    )
  return jax.make_mesh(resolved, axes, axis_types=(AxisType.Auto,) * len(axes))


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def _axis_size(mesh: Optional[Mesh], axes: tuple[str, ...]) -> int:
  if mesh is None:
    return 1
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_mesh_spec(
    names: Sequence[Optional[str]],
    rules: Rules,
    *,
    shape: Optional[Sequence[int]] = None,
    mesh: Optional[Mesh] = None,
) -> PartitionSpec:
  """Logical axis names of one array -> its PartitionSpec.

  For each dimension the rules with that logical name are tried in order; a rule applies when
  none of its mesh axes is already used in this spec and (given `shape` and `mesh`) the product
  of their sizes divides the dimension. No applicable rule (or an unknown name, or None) means
  replicated along that dimension.
  """
  if shape is not None and len(shape) != len(names):
    raise ValueError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for dim, name in enumerate(names):
    chosen: tuple[str, ...] = ()
    for rule_name, rule_axes in rules:
      if name is None or rule_name != name:
        continue
      axes = tuple(a for a in _as_tuple(rule_axes) if a not in used)
      if mesh is not None:
        unknown = [a for a in axes if a not in mesh.shape]
        if unknown:
          raise ValueError(
              f"logical axis rule ({rule_name!r}, {rule_axes!r}) names mesh axes "
              f"{unknown} not in the mesh axes {tuple(mesh.axis_names)}"
          )
      if not axes:
        continue
      size = _axis_size(mesh, axes)
      if shape is not None and shape[dim] % size:
        logging.debug(
            "dimension %d (%s, size %d) not divisible by mesh axes %s (size %d): replicated",
            dim,
            name,
            shape[dim],
            axes,
            size,
        )
        continue
      chosen = axes
      break
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
  return PartitionSpec(*spec)


def logical_names(variable: nnx.Variable) -> Optional[tuple[Optional[str], ...]]:
  """A Variable's logical axis names (`out_sharding` metadata; `sharding_names` is its alias)."""
  meta = variable.get_metadata()
  names = meta.get("out_sharding", meta.get("sharding_names"))
  return None if names is None else tuple(names)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedSharding for every array in a state (usually abstract, from `nnx.eval_shape`).

  The result has the state's own structure (each Variable holds its NamedSharding), so it can be
  passed as `out_shardings` / `in_shardings` for that state, and `jax.tree.leaves` of it are the
  NamedShardings. Variables without logical names (RNG state, ...) are replicated.
  """

  def one(x):
    value = x.get_value() if is_variable(x) else x
    names = logical_names(x) if is_variable(x) else None
    shape = tuple(getattr(value, "shape", ()))
    if names is None:
      spec = PartitionSpec()
    else:
      spec = logical_to_mesh_spec(names, rules, shape=shape, mesh=mesh)
    sharding = NamedSharding(mesh, spec)
    return x.replace(sharding) if is_variable(x) else sharding

  return jax.tree.map(one, abstract_state, is_leaf=is_variable)


def batch_axes(mesh: Union[Mesh, jax.sharding.AbstractMesh]) -> Optional[tuple[str, ...]]:
  """The data-parallel axes present in the mesh (None: none)."""
  axes = tuple(a for a in DATA_AXES if a in mesh.axis_names)
  return axes or None


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data-parallel axes present in the mesh."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying their shardings: the targets for a sharded checkpoint restore."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
  )


def sharded_init(make_model: Callable[[], nnx.Module], mesh: Mesh, rules: Rules) -> nnx.Module:
  """Builds `make_model()` with every array created directly in its shards."""
  abstract = nnx.eval_shape(make_model)
  graphdef, abstract_state = nnx.split(abstract)
  shardings = state_shardings(abstract_state, mesh, rules)

  @jax.jit(out_shardings=shardings)
  def init():
    return nnx.split(make_model())[1]

  with jax.set_mesh(mesh):
    state = init()
  return nnx.merge(graphdef, state)


def describe(state: Any) -> str:
  """One line per array: path, shape and PartitionSpec (for logs)."""
  lines = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    spec = getattr(getattr(leaf, "sharding", None), "spec", None)
    lines.append(f"{jax.tree_util.keystr(path)} {tuple(np.shape(leaf))} {spec}")
  return "\n".join(lines)
