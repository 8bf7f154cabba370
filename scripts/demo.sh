#!/usr/bin/env bash
# Trains a classifier on Fashion-MNIST with asyncopt's worker threads.
# Installs missing packages, builds the `release` preset's train_fashion_mnist
# example and runs it from the current directory; arguments are passed to the
# example (try --help). The loss curve goes to build/fashion_mnist_loss.csv
# unless --csv says otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

(
  cd "${root}"
  scripts/deps.sh
  cmake --preset release >/dev/null
  cmake --build --preset release --target train_fashion_mnist \
    --parallel "$(nproc 2>/dev/null || echo 2)"
)
csv=(--csv "${root}/build/fashion_mnist_loss.csv")
for arg in "$@"; do
  if [[ "${arg}" == --csv || "${arg}" == --csv=* ]]; then
    csv=()
  fi
done
exec "${root}/build/release/examples/train_fashion_mnist" "${csv[@]}" "$@"
