#!/usr/bin/env bash
# Installs the Debian packages asyncopt needs to build, test, benchmark and run its
# examples. Quiet and idempotent: when everything is already installed it prints
# nothing and exits 0. Otherwise it installs only what is missing, non-interactively,
# as root or through sudo.
set -euo pipefail

packages=(
  build-essential
  cmake
  ninja-build
  ccache
  pkg-config
  git
  libeigen3-dev
  libxsimd-dev
  xtl-dev
  catch2
  libbenchmark-dev
  libcli11-dev
  libzmq3-dev
  cppzmq-dev
  libopenmpi-dev
  openmpi-bin
  zlib1g-dev
  dataset-fashion-mnist
  liblinear-tools
  python3
  python3-venv
  python3-matplotlib
  doxygen
  clang
  libclang-rt-14-dev
)

die() {
  echo "deps.sh: $*" >&2
  exit 1
}

is_installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
  [[ "${status}" == "installed" ]]
}

command -v dpkg-query >/dev/null 2>&1 ||
  die "dpkg-query not found: this script installs Debian packages; install these by other means: ${packages[*]}"

missing=()
for package in "${packages[@]}"; do
  is_installed "${package}" || missing+=("${package}")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if ((EUID == 0)); then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  # Never wait for a password that nobody can type.
  if [[ -t 0 ]]; then
    as_root=(sudo)
  else
    as_root=(sudo -n)
  fi
else
  die "missing packages (${missing[*]}) and neither root nor sudo is available; run as root: apt-get install ${missing[*]}"
fi

echo "deps.sh: installing ${missing[*]}" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"

for package in "${missing[@]}"; do
  is_installed "${package}" || die "${package} is still not installed after apt-get install"
done
