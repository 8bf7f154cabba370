#!/usr/bin/env bash
# Data-parallel training across the processes of an MPI job on this machine: 4 processes on
# 127.0.0.1 (Open MPI's mpirun) train softmax regression on Fashion-MNIST, first with
# synchronous SGD (an all-reduce every step), then with local SGD (an all-reduce every
# --period steps). Installs missing packages, builds the `release` preset's mpi_train,
# prints process 0's line per epoch (loss, test accuracy, bytes all-reduced) and ends with
# the test accuracy of the local SGD run. The loss curves go to build/mpi_*_loss.csv.
#
# Usage: scripts/mpi_demo.sh [--ranks N] [--workers N] [--epochs N] [--batch-size N]
#                            [--lr X] [--period N]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ranks=4
workers=1 # threads per process
epochs=5
batch_size=8 # per worker: a synchronous round averages ranks x workers x batch_size examples
lr=0.05
period=8

die() {
  echo "mpi_demo.sh: $*" >&2
  exit 2
}
positive_integer() {
  [[ "$2" =~ ^[1-9][0-9]{0,5}$ ]] || die "$1: must be a positive integer below 1000000, got '$2'"
}
positive_number() {
  if ! [[ "$2" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?$ ]] ||
    ! awk -v x="$2" 'BEGIN { exit !(x + 0 > 0) }'; then
    die "$1: must be a positive number, got '$2'"
  fi
}
while (($#)); do
  option=$1
  case "${option}" in
    -h | --help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --ranks | --workers | --epochs | --batch-size | --lr | --period) ;;
    *) die "unknown argument '${option}' (try --help)" ;;
  esac
  (($# >= 2)) || die "${option} needs a value"
  value=$2
  shift 2
  case "${option}" in
    --ranks) positive_integer "${option}" "${value}"; ranks=${value} ;;
    --workers) positive_integer "${option}" "${value}"; workers=${value} ;;
    --epochs) positive_integer "${option}" "${value}"; epochs=${value} ;;
    --batch-size) positive_integer "${option}" "${value}"; batch_size=${value} ;;
    --lr) positive_number "${option}" "${value}"; lr=${value} ;;
    --period) positive_integer "${option}" "${value}"; period=${value} ;;
  esac
done

(
  cd "${root}"
  scripts/deps.sh
  cmake --preset release >/dev/null
  cmake --build --preset release --target mpi_train --parallel "$(nproc 2>/dev/null || echo 2)" ||
    {
      echo "mpi_demo.sh: could not build examples/mpi_train (it needs MPI's C library, from libopenmpi-dev)" >&2
      exit 1
    }
)
command -v mpirun >/dev/null 2>&1 || die "mpirun not found (Debian: apt-get install openmpi-bin)"

if ((EUID == 0)); then
  # Open MPI refuses to run as root unless told twice.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# --host 127.0.0.1:N gives the machine N slots whatever its cores, so Open MPI does not see
# that the processes may outnumber the cores and would busy-poll in every all-reduce (300
# times slower here with 4 processes on 2 cores): mpi_yield_when_idle makes a waiting
# process yield its core. --bind-to none lets each process's threads use any core. --quiet
# leaves a failing process's own error line alone on stderr.
mpirun=(mpirun -np "${ranks}" --oversubscribe --host "127.0.0.1:${ranks}" --bind-to none
  --mca mpi_yield_when_idle 1 --timeout 900 --quiet)
job=("${root}/build/release/examples/mpi_train" --workers "${workers}" --epochs "${epochs}"
  --batch-size "${batch_size}" --lr "${lr}")

threads=$( ((workers == 1)) && echo "1 worker" || echo "${workers} workers")
echo "== synchronous SGD: ${ranks} processes x ${threads}, an all-reduce every step"
"${mpirun[@]}" "${job[@]}" --consistency synchronous \
  --csv "${root}/build/mpi_synchronous_loss.csv"
echo
echo "== local SGD: ${ranks} processes x ${threads}, an all-reduce every ${period} steps"
"${mpirun[@]}" "${job[@]}" --consistency local --period "${period}" \
  --csv "${root}/build/mpi_local_loss.csv"
