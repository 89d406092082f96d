"""Train and evaluate a config in a run directory (resumes when it holds a checkpoint).

    hyperx train --config=configs/xnli.py --workdir=DIR
    python -m hyperx_jax.main --config=configs/xnli.py --workdir=DIR

Parses flags, starts jax's distributed runtime for multi-process runs (auto-detected on Cloud
TPU / SLURM, or an explicit coordinator), logs the devices and calls
`train.train_and_evaluate`. Config variants and overrides:

  --config=configs/xnli.py:size=large,method=task_adapters --config.optim.lr=3e-5

Other libraries' INFO logs (orbax, jax, absl) stay off the console unless --verbose.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hyperx_jax import cli


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "Training config file (configs/*.py[:arg]).", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, results.")
  flags.DEFINE_string(
      "coordinator_address",
      None,
      "HOST:PORT of process 0 for multi-process runs without a cluster that jax "
      "detects itself (default: $JAX_COORDINATOR_ADDRESS).",
  )
  flags.DEFINE_integer("num_processes", None, "Number of processes (default: $JAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None, "This process's index (default: $JAX_PROCESS_ID).")
  flags.DEFINE_bool(
      "allow_config_change",
      False,
      "Continue a workdir trained with a different config (default: an error "
      "listing the fields that differ, beyond config.changes.RESUMABLE_CHANGES).",
  )
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  from hyperx_jax import distributed  # pylint: disable=g-import-not-at-top

  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_threefry_partitionable", True)
  from hyperx_jax import train  # pylint: disable=g-import-not-at-top

  logging.info(
      "process %d of %d; %d local / %d global devices: %s",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
      jax.local_devices(),
  )
  results = train.train_and_evaluate(
      FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change
  )
  if results is None:
    logging.info("stopped by preemption after saving; rerun the same command to resume")


if __name__ == "__main__":
  cli.run(sys.modules[__name__])
