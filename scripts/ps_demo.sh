#!/usr/bin/env bash
# The parameter-server job on this machine: 2 servers (each holding half of the keys) and
# 2 worker processes, over ZeroMQ on 127.0.0.1, training softmax regression on
# Fashion-MNIST. Installs missing packages, builds the `release` preset's ps_server and
# ps_worker, runs the job, and ends with the test accuracy of the servers' model.
#
# Usage: scripts/ps_demo.sh [--epochs N] [--rule sgd|momentum|dc|adam] [--lr X]
#                           [--consistency locked|lockfree|ssp] [--port P]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
epochs=10
rule=sgd
lr=0.01
consistency=locked
port=5570
while (($#)); do
  case "$1" in
    --epochs) epochs=$2; shift 2 ;;
    --rule) rule=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --consistency) consistency=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ps_demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

(
  cd "${root}"
  scripts/deps.sh
  cmake --preset release >/dev/null
  cmake --build --preset release --target ps_server ps_worker \
    --parallel "$(nproc 2>/dev/null || echo 2)"
)
bin="${root}/build/release/examples"
dimension=7850 # 10 classes x (784 pixels + 1 bias)
half=$((dimension / 2))
servers="tcp://127.0.0.1:${port},tcp://127.0.0.1:$((port + 1))"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "${pid}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

common=(--dimension "${dimension}" --workers 2 --rule "${rule}" --lr "${lr}"
  --consistency "${consistency}")
"${bin}/ps_server" --endpoint "tcp://127.0.0.1:${port}" --begin 0 --end "${half}" "${common[@]}" &
pids+=($!)
"${bin}/ps_server" --endpoint "tcp://127.0.0.1:$((port + 1))" --begin "${half}" \
  --end "${dimension}" "${common[@]}" &
pids+=($!)

workers=()
for rank in 0 1; do
  "${bin}/ps_worker" --servers "${servers}" --rank "${rank}" --ranks 2 --epochs "${epochs}" &
  workers+=($!)
done
status=0
for pid in "${workers[@]}"; do
  wait "${pid}" || status=$?
done
if ((status != 0)); then
  echo "ps_demo.sh: a worker failed (exit status ${status})" >&2
  exit "${status}"
fi
# Both workers are done: the servers hold the final model.
"${bin}/ps_worker" --servers "${servers}" --evaluate
