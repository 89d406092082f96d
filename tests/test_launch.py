"""launch/: the dry-run command sequences and shellcheck."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch"))
PINNED_JAX = re.search(r"^jax==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)


def _launch(script, *args, env=None):
  base = {
      k: v
      for k, v in os.environ.items()
      if not k.startswith("SLURM_") and k not in ("DRY_RUN", "WORKDIR", "CONFIG", "TPU_NAME")
  }
  result = subprocess.run(
      ["bash", str(LAUNCH / script), *args],
      capture_output=True,
      text=True,
      env={**base, **(env or {})},
      timeout=30,
      check=False,
  )
  return result.returncode, result.stdout, result.stderr


def _commands(stdout):
  return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def test_tpu_all_dry_run_prints_the_full_sequence():
  rc, out, err = _launch(
      "tpu_vm.sh",
      "all",
      "--dry-run",
      "--project=proj",
      "--zone=us-central2-b",
      "--accelerator-type=v4-32",
      "--name=hx",
      "--config=configs/xnli.py:size=large",
      "--workdir=gs://bucket/run",
      "--",
      "--config.optim.lr=3e-5",
  )
  assert rc == 0, err
  create, tar, scp, setup, run, logs = _commands(out)
  assert create == (
      "gcloud compute tpus tpu-vm create hx --zone=us-central2-b --project=proj "
      "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base"
  )
  assert tar.startswith("tar -czf ") and "--exclude=.git" in tar
  assert scp.startswith("gcloud compute tpus tpu-vm scp ") and scp.endswith("--worker=all")
  assert setup.startswith(
      "gcloud compute tpus tpu-vm ssh hx --zone=us-central2-b --project=proj "
      "--worker=all --command "
  )
  assert "pip install" in setup and "-r /tmp/hyperx-requirements.txt" in setup
  assert f'"jax[tpu]=={PINNED_JAX}"' in setup
  assert "--worker=all" in run
  assert (
      "cd hyperx_jax && setsid nohup .venv/bin/python -m hyperx_jax.main "
      "--config=configs/xnli.py:size=large --workdir=gs://bucket/run --config.optim.lr=3e-5"
  ) in run
  assert "tail" in logs and "--worker=0" in logs
  assert "v2-alpha" not in out and "jax_backend_target" not in out


@pytest.mark.parametrize(
    "accelerator,runtime",
    [
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-64", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
        ("v4-8", "tpu-ubuntu2204-base"),
    ],
)
def test_tpu_runtime_version_follows_the_generation(accelerator, runtime):
  rc, out, err = _launch("tpu_vm.sh", "create", "--dry-run", f"--accelerator-type={accelerator}")
  assert rc == 0, err
  assert _commands(out)[0].endswith(f"--accelerator-type={accelerator} --version={runtime}")


def test_tpu_queued_resource_create_and_delete():
  rc, out, err = _launch(
      "tpu_vm.sh",
      "create",
      "--dry-run",
      "--queued",
      "--spot",
      "--name=hx",
      "--accelerator-type=v5litepod-16",
      env={"ZONE": "us-west4-a"},
  )
  assert rc == 0, err
  create, describe = _commands(out)
  assert create == (
      "gcloud compute tpus queued-resources create hx-qr --node-id=hx --zone=us-west4-a "
      "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot"
  )
  assert describe.startswith("gcloud compute tpus queued-resources describe hx-qr")
  rc, out, _ = _launch("tpu_vm.sh", "delete", "--dry-run", "--queued", "--name=hx")
  assert _commands(out) == [
      "gcloud compute tpus queued-resources delete hx-qr --zone=us-central2-b --force --quiet"
  ]


def test_tpu_bad_input_fails_before_creating_anything():
  rc, out, err = _launch("tpu_vm.sh", "all", "--dry-run")
  assert rc != 0 and "no workdir" in err and not _commands(out)
  rc, _, err = _launch("tpu_vm.sh", "launch", "--dry-run")
  assert rc != 0 and "known verbs: create setup run logs delete all" in err
  rc, _, err = _launch("tpu_vm.sh", "create", "--dry-run", "--accelerator-type=v9-8")
  assert rc != 0 and "--version" in err


def test_gpu_node_dry_run():
  rc, out, err = _launch(
      "gpu_node.sh",
      "all",
      "--dry-run",
      "--workdir=/tmp/run",
      "--gpus=0,1",
      "--",
      "--config.batch_size=64",
  )
  assert rc == 0, err
  setup, run = _commands(out)
  assert f'"jax[cuda12]=={PINNED_JAX}"' in setup
  assert run == (
      "env CUDA_VISIBLE_DEVICES=0,1 .venv/bin/python -m hyperx_jax.main "
      "--config=configs/xnli.py --workdir=/tmp/run --config.batch_size=64"
  )


def test_slurm_submits_itself_then_runs_one_task_per_node_or_gpu():
  rc, out, err = _launch(
      "slurm_multinode.sbatch", "--dry-run", "--nodes=4", "--workdir=/shared/run"
  )
  assert rc == 0, err
  (submit,) = _commands(out)
  assert submit.startswith("sbatch --nodes=4 --gpus-per-node=8 --ntasks-per-node=1 ")
  assert submit.endswith("launch/slurm_multinode.sbatch --nodes=4 --workdir=/shared/run")
  job_env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "4", "SLURM_SUBMIT_DIR": str(REPO)}
  rc, out, err = _launch(
      "slurm_multinode.sbatch", "--workdir=/shared/run", env={**job_env, "DRY_RUN": "1"}
  )
  assert rc == 0, err
  assert _commands(out) == [
      "srun --nodes=4 --ntasks-per-node=1 --kill-on-bad-exit=1 .venv/bin/python "
      "-m hyperx_jax.main --config=configs/xnli.py --workdir=/shared/run"
  ]
  rc, out, err = _launch(
      "slurm_multinode.sbatch",
      "--dry-run",
      "--per-gpu",
      "--gpus-per-node=4",
      "--workdir=/shared/run",
      env=job_env,
  )
  assert rc == 0, err
  assert _commands(out)[0].startswith("srun --nodes=4 --ntasks-per-node=4 --gpus-per-task=1 ")


MIN_PYTHON = re.search(
    r"^python_requires = >=(\S+)$", (REPO / "setup.cfg").read_text(), re.M
).group(1)


@pytest.mark.parametrize(
    "script, args",
    [("tpu_vm.sh", ("setup", "--dry-run", "--name=hx")), ("gpu_node.sh", ("setup", "--dry-run"))],
)
def test_setup_makes_a_venv_with_the_minimum_python_and_no_tensorflow(script, args):
  rc, out, err = _launch(script, *args)
  assert rc == 0, err
  setup = _commands(out)[-1]
  steps = [
      "command -v uv > /dev/null || curl -LsSf https://astral.sh/uv/",  # uv when missing
      f"uv venv --allow-existing --python {MIN_PYTHON} .venv",
      "uv pip install --python .venv/bin/python -q -r /tmp/hyperx-requirements.txt",
      'find_spec(\\"tensorflow\\") and \\"error: tensorflow is installed\\"',
  ]
  positions = [setup.find(step) for step in steps]
  assert -1 not in positions and positions == sorted(positions), (positions, setup)
  assert MIN_PYTHON == "3.11"  # jax 0.10.2 needs it
  assert not re.search(r"^tensorflow[=<>]", (REPO / "requirements.txt").read_text(), re.M)


def _shellcheck():
  return shutil.which("shellcheck") or shutil.which(
      "shellcheck", path=str(pathlib.Path(sys.executable).parent)
  )


@pytest.mark.skipif(_shellcheck() is None, reason="shellcheck is not installed")
def test_shellcheck_passes():
  assert len(SCRIPTS) >= 4
  result = subprocess.run(
      [_shellcheck(), "--external-sources", *map(str, SCRIPTS)],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode == 0, result.stdout + result.stderr
