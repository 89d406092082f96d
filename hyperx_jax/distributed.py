"""Multi-process start-up: one call before any other jax work.

`initialize()` decides between three cases:

- an explicit coordinator (arguments, or `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID`): `jax.distributed.initialize(coordinator, num_processes, process_id)`;
  this is how two processes on one machine (tests, a workstation) form one mesh;
- a cluster that jax detects by itself (Cloud TPU VM pods, SLURM, Open MPI, Kubernetes):
  `jax.distributed.initialize()` with no arguments;
- neither: a single process, nothing to do.

On CPU, cross-process collectives need an implementation chosen before the backend starts;
gloo is set here (a no-op for GPU and TPU backends).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def detected_cluster() -> Optional[str]:
  """The name of the cluster environment jax would auto-detect (None on a plain machine)."""
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
  except ImportError:  # jax moved its private cluster registry: trust the caller instead
    return None
  for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if not env.opt_in_only_method and env.is_env_present():
      return env.__name__
  return None


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


def use_gloo_on_cpu() -> None:
  """Cross-process collectives on the CPU backend (must precede backend start-up)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    initialization_timeout: int = 300,
) -> bool:
  """Starts jax's distributed runtime when this is a multi-process run.

  Returns True when the runtime was started here (or already running), False for a plain
  single-process run. Must be called before anything touches jax devices.
  """
  if jax.distributed.is_initialized():
    return True
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None:
    num_processes = _env_int(ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(ENV_PROCESS_ID)
  cluster = None if coordinator_address else detected_cluster()
  if coordinator_address is None and cluster is None:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError(
          f"num_processes={num_processes}, process_id={process_id} given without a "
          f"coordinator address: pass coordinator_address='HOST:PORT' (or set {ENV_COORDINATOR})"
          " so the processes can find each other"
      )
    logging.info("single process: jax.distributed not initialised")
    return False
  use_gloo_on_cpu()
  if coordinator_address is not None:
    missing = [
        name
        for name, v in (("num_processes", num_processes), ("process_id", process_id))
        if v is None
    ]
    if missing:
      raise ValueError(
          f"coordinator_address={coordinator_address!r} needs {' and '.join(missing)} too (or "
          f"{ENV_NUM_PROCESSES} / {ENV_PROCESS_ID} in the environment)"
      )
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id={process_id} is not in [0, num_processes={num_processes})")
    logging.info(
        "jax.distributed: process %d of %d, coordinator %s",
        process_id,
        num_processes,
        coordinator_address,
    )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
    )
  else:
    logging.info("jax.distributed: %s cluster detected, auto-initialising", cluster)
    jax.distributed.initialize(
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
    )
  return True
