#!/usr/bin/env bash
# One GPU machine, several GPUs: one process sees every local GPU, and the mesh spans them.
#
# Usage: launch/gpu_node.sh VERB [flags] [-- CONFIG_OVERRIDES...]
#   VERB: setup (pip install, CUDA 12 jax wheels) | run | all (= setup, run)
# Flags (environment variable in brackets):
#   --config=FILE[:ARG]   [CONFIG]   default: configs/xnli.py
#   --workdir=DIR         [WORKDIR]  checkpoints, metrics, results (needed by run)
#   --gpus=0,1,...        [GPUS]     restrict to these GPUs (CUDA_VISIBLE_DEVICES); default: all
#   --dry-run             [DRY_RUN=1] print every command instead of running it
# Anything after `--` goes to hyperx_jax.main, e.g. -- --config.batch_size=64
set -euo pipefail

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONFIG="${CONFIG:-configs/xnli.py}"
WORKDIR="${WORKDIR:-}"
GPUS="${GPUS:-}"

script_flag() {
  case "$1" in
    --gpus=*) GPUS="${1#*=}" ;;
    *) return 1 ;;
  esac
}

setup() {
  local install
  install="$(install_command cuda12)"
  run bash -c "cd $(quote "${REPO_ROOT}") && ${install}"
}

start() {
  build_main_command
  cd "${REPO_ROOT}"
  if [[ -n "${GPUS}" ]]; then
    run env "CUDA_VISIBLE_DEVICES=${GPUS}" "${MAIN_CMD[@]}"
  else
    run "${MAIN_CMD[@]}"
  fi
}

main() {
  VERB="${1:-}"
  [[ -n "${VERB}" ]] || usage 1
  shift
  parse_args "$@"
  case "${VERB}" in
    setup) setup ;;
    run) start ;;
    all) build_main_command; setup; start ;;
    -h | --help) usage 0 ;;
    *) die "unknown verb '${VERB}'; known verbs: setup run all" ;;
  esac
}

main "$@"
