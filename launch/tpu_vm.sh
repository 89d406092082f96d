#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): create, set up, run hyperx_jax on every worker, follow
# the logs, delete. Every worker runs the same command; hyperx_jax.main initialises jax.distributed.
#
# Usage: launch/tpu_vm.sh VERB [flags] [-- CONFIG_OVERRIDES...]
#   VERB: create | setup | run | logs | delete | all (= create, setup, run, logs)
# Flags (environment variable in brackets):
#   --project=ID          [PROJECT]           default: gcloud's configured project
#   --zone=ZONE           [ZONE]              default: us-central2-b
#   --accelerator-type=T  [ACCELERATOR_TYPE]  default: v4-8 (e.g. v4-32, v5litepod-16, v5p-64, v6e-8)
#   --version=RUNTIME     [RUNTIME_VERSION]   default: from the accelerator type
#   --name=NAME           [TPU_NAME]          default: hyperx-$USER
#   --config=FILE[:ARG]   [CONFIG]            default: configs/xnli.py
#   --workdir=gs://...    [WORKDIR]           checkpoints, metrics, results (needed by run)
#   --queued              [QUEUED=1]          create through a queued resource
#   --spot                [SPOT=1]            spot (preemptible) capacity
#   --log-worker=N|all    [LOG_WORKER]        whose log `logs` follows, default: 0
#   --dry-run             [DRY_RUN=1]         print every command instead of running it
# Anything after `--` goes to hyperx_jax.main, e.g. -- --config.optim.lr=3e-5
set -euo pipefail

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROJECT="${PROJECT:-}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
TPU_NAME="${TPU_NAME:-hyperx-${USER:-user}}"
CONFIG="${CONFIG:-configs/xnli.py}"
WORKDIR="${WORKDIR:-}"
QUEUED="${QUEUED:-0}"
SPOT="${SPOT:-0}"
LOG_WORKER="${LOG_WORKER:-0}"
# On the workers, relative to the ssh user's home directory.
REMOTE_DIR=hyperx_jax
REMOTE_LOG=hyperx_jax.log

script_flag() {
  case "$1" in
    --project=*) PROJECT="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --accelerator-type=*) ACCELERATOR_TYPE="${1#*=}" ;;
    --version=*) RUNTIME_VERSION="${1#*=}" ;;
    --name=*) TPU_NAME="${1#*=}" ;;
    --log-worker=*) LOG_WORKER="${1#*=}" ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    *) return 1 ;;
  esac
}

# TPU software version per generation (cloud.google.com/tpu/docs/runtimes).
runtime_for() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime for accelerator type '$1'; pass --version=RUNTIME" ;;
  esac
}

location_flags() {
  LOCATION=(--zone="${ZONE}")
  if [[ -n "${PROJECT}" ]]; then
    LOCATION+=(--project="${PROJECT}")
  fi
}

# gcloud ... tpu-vm ssh on every worker (or one) of the slice.
on_workers() {
  local worker="$1" command="$2"
  run gcloud compute tpus tpu-vm ssh "${TPU_NAME}" "${LOCATION[@]}" --worker="${worker}" \
    --command "${command}"
}

create() {
  local spot=()
  [[ "${SPOT}" == 1 ]] && spot=(--spot)
  if [[ "${QUEUED}" == 1 ]]; then
    run gcloud compute tpus queued-resources create "${TPU_NAME}-qr" --node-id="${TPU_NAME}" \
      "${LOCATION[@]}" --accelerator-type="${ACCELERATOR_TYPE}" \
      --runtime-version="${RUNTIME_VERSION}" "${spot[@]}"
    wait_until_active
  else
    run gcloud compute tpus tpu-vm create "${TPU_NAME}" "${LOCATION[@]}" \
      --accelerator-type="${ACCELERATOR_TYPE}" --version="${RUNTIME_VERSION}" "${spot[@]}"
  fi
}

wait_until_active() {
  local state=""
  while true; do
    state="$(run gcloud compute tpus queued-resources describe "${TPU_NAME}-qr" "${LOCATION[@]}" \
      --format='value(state.state)')"
    if [[ "${DRY_RUN}" == 1 ]]; then
      echo "${state}"
      echo "# (waits until the queued resource's state is ACTIVE)"
      return
    fi
    case "${state}" in
      ACTIVE) return ;;
      FAILED | SUSPENDED) die "queued resource ${TPU_NAME}-qr is ${state}" ;;
      *) echo "queued resource ${TPU_NAME}-qr: ${state:-unknown}; waiting" >&2; sleep 60 ;;
    esac
  done
}

# Copies the working tree (not .git or virtual environments) to every worker and installs it.
setup() {
  local archive="${TMPDIR:-/tmp}/hyperx_jax-code.tar.gz"
  run tar -czf "${archive}" -C "${REPO_ROOT}" --exclude=.git --exclude=.venv --exclude=__pycache__ .
  run gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:hyperx_jax-code.tar.gz" \
    "${LOCATION[@]}" --worker=all
  local install
  install="$(install_command tpu)"
  on_workers all "mkdir -p ${REMOTE_DIR} && tar -xzf hyperx_jax-code.tar.gz -C ${REMOTE_DIR}\
 && cd ${REMOTE_DIR} && ${install}"
}

# Starts training detached on every worker (survives the ssh session), output to REMOTE_LOG.
start() {
  [[ "${WORKDIR}" == gs://* ]] || [[ "${DRY_RUN}" == 1 ]] ||
    echo "warning: --workdir=${WORKDIR} is not a gs:// path; workers do not share local disks" >&2
  build_main_command
  on_workers all "cd ${REMOTE_DIR} && setsid nohup $(quote "${MAIN_CMD[@]}") > ${REMOTE_LOG} 2>&1\
 < /dev/null &"
}

logs() {
  on_workers "${LOG_WORKER}" "tail -n +1 -F ${REMOTE_LOG}"
}

delete() {
  if [[ "${QUEUED}" == 1 ]]; then
    run gcloud compute tpus queued-resources delete "${TPU_NAME}-qr" "${LOCATION[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "${TPU_NAME}" "${LOCATION[@]}" --quiet
  fi
}

main() {
  VERB="${1:-}"
  [[ -n "${VERB}" ]] || usage 1
  shift
  parse_args "$@"
  if [[ -z "${RUNTIME_VERSION}" ]]; then
    RUNTIME_VERSION="$(runtime_for "${ACCELERATOR_TYPE}")"
  fi
  location_flags
  if [[ "${VERB}" == run || "${VERB}" == all ]]; then
    build_main_command  # fail on a missing flag before creating anything
  fi
  case "${VERB}" in
    create) create ;;
    setup) setup ;;
    run) start ;;
    logs) logs ;;
    delete) delete ;;
    all) create; setup; start; logs ;;
    -h | --help) usage 0 ;;
    *) die "unknown verb '${VERB}'; known verbs: create setup run logs delete all" ;;
  esac
}

main "$@"
