"""Hyper-X: one hypernetwork that generates every adapter (docs/method.md).

For task t, language l and layer i:

    s_{t,l,i} = [task_t ; lang_l ; layer_i]                      source       [192]
    p         = W2 · ReLU(W1 · s + b1) + b2                        projector    [P]
    p         = p / ‖p‖                       with `unit_projection` (off in the paper's run)
    D_i, bD_i, U_i, bU_i, γ_i, β_i = G · p + g                     generators

and layer i's adapter is A_i(z) = LN_i(U_i · ReLU(D_i · z + bD_i) + bU_i) + z (`adapters.py`).

With layer conditioning (the default) ONE generator serves all layers and the layer identity
comes from the layer embedding; without it the source is [task ; lang] and every layer has its
own generator (weights with a leading `layers` axis). A single doubly-vmapped call produces the
weights of all L layers for all G (task, language) groups of a batch: leaves [L, G, ...].

The language vector lang_l (`language_source`, docs/method.md section 2):

    learned    lang_l = E[l]                E  `lang_embeddings`  [Λ, dl], N(0, 1)
    typology   lang_l = z_l · W             z  `lang_features`    [Λ, F], URIEL (constant)
                                            W  `typology_projection` [F, dl], 0 at init
    both       lang_l = E[l] + z_l · W      E  0 at init: a learned residual on the typology

W starts at 0, so a fresh network generates the adapters `learned` does up to the language
part of the source (section 4's near-identity argument is unchanged), and an untrained language
gets z_l · W with a W shaped only by the training languages' gradients: nothing random.

New languages: the trainer re-initialises a row of `lang_embeddings` in place with
`set_embedding_row("language", index, value)` (ids are positions in `config.languages`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from hyperx_jax.config.vocabulary import LANGUAGE_SOURCES, TYPOLOGY_FEATURE_SETS, TYPOLOGY_SOURCES
from hyperx_jax.models.adapters import AdapterWeights, adapter_shapes
from hyperx_jax.models.layers import param

UNIT_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class HyperNetConfig:
  """Hypernetwork sizes and switches; defaults are the authors' run (P = 192, b = 256)."""

  task_dim: int = 64
  lang_dim: int = 64
  layer_dim: int = 64
  projected_dim: int = 192
  bottleneck: int = 256
  condition_on_layer: bool = True
  use_projector: bool = True
  conditional_layer_norm: bool = True
  init_std: float = 0.01
  # p / ‖p‖ before the generators: a generated tensor's step is then bounded by the generator's
  # own step, as a directly trained adapter's is (docs/method.md, section 3).
  unit_projection: bool = False
  language_source: str = "learned"  # one of LANGUAGE_SOURCES
  typology_features: tuple[str, ...] = tuple(TYPOLOGY_FEATURE_SETS)  # URIEL sets of z
  # Learned source: ids of languages with no training data whose vector is the mean of the
  # other rows (UNTRAINED_LANGUAGE_VECTORS 'mean'); empty: every language reads its own row.
  mean_languages: tuple[int, ...] = ()

  def __post_init__(self):
    if self.language_source not in LANGUAGE_SOURCES:
      raise ValueError(f"language_source {self.language_source!r} is not one of {LANGUAGE_SOURCES}")

  @property
  def learned_rows(self) -> bool:
    return self.language_source in ("learned", "both")

  @property
  def typology(self) -> bool:
    return self.language_source in TYPOLOGY_SOURCES

  @property
  def source_dim(self) -> int:
    return self.task_dim + self.lang_dim + (self.layer_dim if self.condition_on_layer else 0)

  @property
  def generator_in_dim(self) -> int:
    return self.projected_dim if self.use_projector else self.source_dim


# ---------------------------------------------------------------------------------------------
# The equations, as pure functions of one source vector (vmapped over layers and groups).


def source_vector(task_emb: jax.Array, lang_emb: jax.Array, layer_emb: jax.Array) -> jax.Array:
  """s = [task ; lang ; layer]  ([dt] , [dl], [di or 0]) -> [source]."""
  return jnp.concatenate([task_emb, lang_emb, layer_emb], axis=-1)


def project_source(projector: dict[str, jax.Array], s: jax.Array) -> jax.Array:
  """p = W2 · ReLU(W1 · s + b1) + b2: [source] -> [P]. Identity when there is no projector."""
  if not projector:
    return s
  hidden = jax.nn.relu(s @ projector["hidden_kernel"] + projector["hidden_bias"])
  return hidden @ projector["out_kernel"] + projector["out_bias"]


def unit_vector(p: jax.Array) -> jax.Array:
  """p / ‖p‖ over the last axis (ε inside the root keeps the gradient finite at p = 0)."""
  return p * jax.lax.rsqrt(jnp.sum(jnp.square(p), axis=-1, keepdims=True) + UNIT_EPS)


def generate_adapter(
    generators: dict[str, dict[str, jax.Array]], p: jax.Array, shapes: dict[str, tuple[int, ...]]
) -> AdapterWeights:
  """One adapter from the projected source p [P]: tensor = reshape(p · kernel + bias).

  generators[name]: kernel [P, prod(shape)], bias [prod(shape)].
  """
  return AdapterWeights(
      **{
          name: (p @ g["kernel"] + g["bias"]).reshape(shapes[name])
          for name, g in generators.items()
      }
  )


class LanguageFeatures(nnx.Variable):
  """Constant typology vectors z [Λ, F]: not a parameter (never trained, never saved; rebuilt
  from the language list)."""


class HyperNetwork(nnx.Module):
  """Embeddings + source projector + generators; `__call__(task_ids, lang_ids)` -> weights."""

  def __init__(
      self,
      config: HyperNetConfig,
      *,
      hidden_size: int,
      num_layers: int,
      num_tasks: int,
      num_languages: int,
      param_dtype=jnp.float32,
      rngs: nnx.Rngs,
      language_features: Optional[jax.Array] = None,
  ):
    """`language_features`: z [num_languages, F], needed by the typology sources."""
    self.config = config
    self.hidden_size = hidden_size
    self.num_layers = num_layers
    c, std = config, config.init_std
    self.task_embeddings = param(
        rngs, (num_tasks, c.task_dim), ("tasks", None), std=1.0, dtype=param_dtype
    )  # [T, dt]
    learned = c.language_source == "learned"  # `both`: rows start at 0 (a residual)
    self.lang_embeddings = (
        param(
            rngs if learned else None,
            (num_languages, c.lang_dim),
            ("languages", None),
            std=1.0 if learned else 0.0,
            dtype=param_dtype,
        )
        if c.learned_rows
        else None
    )  # [Lg, dl]
    if c.typology and (language_features is None or language_features.shape[0] != num_languages):
      raise ValueError(
          f"language_source {c.language_source!r} needs language_features "
          f"[{num_languages}, F], got "
          f"{None if language_features is None else language_features.shape}"
      )
    self.lang_features = (
        LanguageFeatures(
            jnp.asarray(language_features, param_dtype),
            out_sharding=("languages", None),
            eager_sharding=False,
        )
        if c.typology
        else None
    )  # [Lg, F]
    self.typology_projection = (
        param(None, (language_features.shape[1], c.lang_dim), (None, None), dtype=param_dtype)
        if c.typology
        else None
    )  # [F, dl]
    self.layer_embeddings = (
        param(rngs, (num_layers, c.layer_dim), ("layers", None), std=1.0, dtype=param_dtype)
        if c.condition_on_layer
        else None
    )  # [L, di]
    self.projector = nnx.Dict(_projector_params(c, param_dtype, rngs)) if c.use_projector else None
    per_layer = () if c.condition_on_layer else (num_layers,)
    layer_axes = () if c.condition_on_layer else ("layers",)
    generators = {}
    for name, shape in adapter_shapes(hidden_size, c.bottleneck, c.conditional_layer_norm).items():
      size = math.prod(shape)
      generators[name] = nnx.Dict(
          kernel=param(
              rngs,
              per_layer + (c.generator_in_dim, size),
              layer_axes + ("hyper_in", "hyper_out"),
              std=std,
              dtype=param_dtype,
          ),
          bias=param(None, per_layer + (size,), layer_axes + ("hyper_out",), dtype=param_dtype),
      )
    self.generators = nnx.Dict(generators)

  def __call__(self, task_ids: jax.Array, lang_ids: jax.Array) -> AdapterWeights:
    """task_ids, lang_ids: [G] int -> AdapterWeights with leaves [L, G, ...] (float32)."""
    c = self.config
    p = self.projections(task_ids, lang_ids)  # [L, G, P]
    if c.unit_projection:
      p = unit_vector(p)
    shapes = adapter_shapes(self.hidden_size, c.bottleneck, c.conditional_layer_norm)
    generators = {
        name: {"kernel": g["kernel"][...], "bias": g["bias"][...]}
        for name, g in self.generators.items()
    }
    per_group = jax.vmap(lambda gens, p_g: generate_adapter(gens, p_g, shapes), in_axes=(None, 0))
    gen_axis = None if c.condition_on_layer else 0  # shared generator vs one per layer
    return jax.vmap(per_group, in_axes=(gen_axis, 0))(generators, p)  # leaves [L, G, ...]

  def projections(self, task_ids: jax.Array, lang_ids: jax.Array) -> jax.Array:
    """p of every (layer, group) [L, G, P], as the projector gives it (before any unit
    projection): what the generators read."""
    task = jnp.take(self.task_embeddings[...], task_ids, axis=0)  # [G, dt]
    lang = jnp.take(self.language_vectors(), lang_ids, axis=0)  # [G, dl]
    if self.layer_embeddings is not None:
      layers = self.layer_embeddings[...]  # [L, di]
    else:
      layers = jnp.zeros((self.num_layers, 0), task.dtype)  # [L, 0]
    projector = {k: v[...] for k, v in self.projector.items()} if self.projector is not None else {}
    one = lambda layer_emb, task_emb, lang_emb: project_source(
        projector, source_vector(task_emb, lang_emb, layer_emb)
    )
    per_group = jax.vmap(one, in_axes=(None, 0, 0))
    return jax.vmap(per_group, in_axes=(0, None, None))(layers, task, lang)  # [L, G, P]

  def language_vectors(self) -> jax.Array:
    """lang_l for every language [Λ, dl], per `config.language_source`."""
    c = self.config
    vectors = 0.0
    if self.lang_embeddings is not None:
      vectors = self.lang_embeddings[...]  # [Lg, dl]
      if c.mean_languages:  # untrained languages read the mean of the trained rows
        untrained = jnp.zeros(vectors.shape[0], bool).at[jnp.asarray(c.mean_languages)].set(True)
        mean = jnp.sum(jnp.where(untrained[:, None], 0.0, vectors), 0) / jnp.sum(~untrained)
        vectors = jnp.where(untrained[:, None], mean, vectors)
    if self.typology_projection is not None:
      vectors = vectors + self.lang_features[...] @ self.typology_projection[...]  # [Lg, dl]
    return vectors

  def embedding_rows(self, kind: str) -> nnx.Param:
    """The embedding table of `kind` ('task' | 'language' | 'layer'), rows = ids."""
    tables = {
        "task": self.task_embeddings,
        "language": self.lang_embeddings,
        "layer": self.layer_embeddings,
    }
    if kind not in tables or tables[kind] is None:
      known = [k for k, v in tables.items() if v is not None]
      raise KeyError(f"unknown embedding kind {kind!r}; known: {known}")
    return tables[kind]

  def set_embedding_row(self, kind: str, index: int, value: jax.Array) -> None:
    """Overwrites one row (e.g. a new language initialised from N(0, 1) or from a relative)."""
    table = self.embedding_rows(kind)
    if not 0 <= index < table.shape[0]:
      raise IndexError(f"{kind} embedding row {index} out of range [0, {table.shape[0]})")
    table[...] = table[...].at[index].set(jnp.asarray(value, table.dtype))


def _projector_params(c: HyperNetConfig, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Param]:
  """Linear(source -> source) -> ReLU -> Linear(source -> P); N(0, init_std), bias 0."""
  s, p = c.source_dim, c.projected_dim
  return {
      "hidden_kernel": param(rngs, (s, s), ("hyper_in", None), std=c.init_std, dtype=param_dtype),
      "hidden_bias": param(None, (s,), (None,), dtype=param_dtype),
      "out_kernel": param(rngs, (s, p), (None, "hyper_in"), std=c.init_std, dtype=param_dtype),
      "out_bias": param(None, (p,), ("hyper_in",), dtype=param_dtype),
  }
