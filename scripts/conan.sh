#!/usr/bin/env bash
# Creates asyncopt's Conan 2 package and tests it with test_package, offline:
#   1. finds Conan 2 (on PATH, or installs it with pip into build/conan-venv),
#   2. uses its own Conan home, build/conan-home (set CONAN_HOME to use another),
#   3. creates a wrapper package per system library (conan/system/conanfile.py:
#      eigen, xsimd, zlib, cppzmq and openmpi from Debian, as name/version@system),
#   4. runs `conan create` with the profile conan/profiles/system, which replaces
#      the recipe's ConanCenter requirements by those wrappers, three times: with the
#      default options, with with_zmq=True (test_package then uses asyncopt::zmq) and
#      with with_mpi=True (test_package then uses asyncopt::mpi, as one process).
# Exits non-zero when any step fails.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

is_conan2() {
  local version
  version=$("$1" --version 2>/dev/null) || return 1
  [[ "${version}" =~ ^Conan\ version\ 2\. ]]
}

conan=$(command -v conan || true)
if [[ -z "${conan}" ]] || ! is_conan2 "${conan}"; then
  venv="${root}/build/conan-venv"
  if [[ ! -x "${venv}/bin/conan" ]] || ! is_conan2 "${venv}/bin/conan"; then
    echo "conan.sh: installing Conan 2 with pip into ${venv#"${root}"/}"
    python3 -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "conan>=2,<3"
  fi
  conan="${venv}/bin/conan"
fi
export CONAN_HOME="${CONAN_HOME:-${root}/build/conan-home}"
"${conan}" --version

if ! "${conan}" profile path default >/dev/null 2>&1; then
  "${conan}" profile detect 2>&1 | grep -v '^WARN: The output of this command'
fi

for package in eigen/3.4.0 xsimd/8.1.0 zlib/1.2.13 cppzmq/4.9.0 openmpi/4.1.4; do
  if ! output=$("${conan}" create conan/system --name "${package%/*}" \
    --version "${package#*/}" --user system --no-remote 2>&1); then
    echo "${output}" >&2
    echo "conan.sh: creating the wrapper ${package}@system failed" >&2
    exit 1
  fi
done
echo "conan.sh: wrappers of the system packages created"

create() {
  echo "==== conan create $* ===="
  "${conan}" create . --profile:host conan/profiles/system --profile:build default \
    --no-remote --build=missing "$@"
}
create
create --options "asyncopt/*:with_zmq=True"
# For Open MPI, where this runs as root (as CI does); harmless elsewhere.
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  create --options "asyncopt/*:with_mpi=True"
