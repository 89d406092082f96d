"""hyperx_jax: Hyper-X (one hypernetwork generating adapters for a frozen XLM-R) in JAX/Flax."""

try:
  import flax
except ModuleNotFoundError:  # PyTorch only: hyperx_jax.torch_loader needs neither JAX nor Flax
  flax = None
else:
  # Modules are built without a mesh (tests, eval_shape, CPU); the trainer places every
  # parameter itself from its logical axis names (see hyperx_jax/sharding.py).
  flax.config.update("flax_always_shard_variable", False)

__version__ = "0.1.0"
