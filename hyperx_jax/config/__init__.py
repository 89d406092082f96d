"""The run's config: its vocabulary, one typed section per part, decoding and checks.

  vocabulary.py   every name a config may use (methods, task kinds, metrics, label sets, ...)
  fields.py       a field written once: default, meaning, whether it may change on resume
  sections.py     the typed sections (ModelSpec = config.model, DataSpec = config.data, ...)
                  with their pure checks
  spec.py         RunSpec (the whole config, typed), `decode` (absent fields -> defaults) and
                  `parse` (decode + every pure check)
  changes.py      which fields may change on resume / within a compare column; config diffs
  environment.py  checks that need the disk, a device or a checkpoint; the model's config
                  on this machine (imports models/ and data/: import it explicitly)
  common.py       defaults and helpers for experiment configs (`configs/<name>.py`)

Only the pure modules are imported here; none of them imports data/, models/ or metrics.
"""

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
)
from hyperx_jax.config.spec import ConfigError, RunSpec, decode, parse
