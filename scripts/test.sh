#!/usr/bin/env bash
# Builds and tests asyncopt the way CI does:
#   1. deps        install missing Debian packages (scripts/deps.sh)
#   2. dev         configure, build and test everything with the `dev` preset
#                  (warnings are errors; install-and-consume; MPI under mpiexec)
#   2b. docs       build the API reference with Doxygen (any warning, an
#                  undocumented public entity included, fails it)
#   2c. conan      create the Conan 2 package offline (with_zmq, with_mpi too) and
#                  test it with test_package (scripts/conan.sh)
#   3. tsan        the tests with ThreadSanitizer (not MPI's: Open MPI's threads)
#   4. asan-ubsan  the tests with AddressSanitizer + UBSan, MPI's included
#
# Usage: scripts/test.sh [--quick]
#   --quick   skip the sanitizer stages (local iteration)
#
# Exits non-zero as soon as a stage fails, and always prints which stages passed.
set -euo pipefail

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

quick=0
for arg in "$@"; do
  case "${arg}" in
    --quick) quick=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "test.sh: unknown argument '${arg}'" >&2
      usage >&2
      exit 2
      ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

jobs=$(nproc 2>/dev/null || echo 2)
probe_dir=""
current=""
passed=()
skipped=()

on_exit() {
  local rc=$?
  if [[ -n "${probe_dir}" ]]; then
    rm -rf "${probe_dir}"
  fi
  echo
  echo "==== test.sh summary ===="
  local stage
  for stage in "${passed[@]}"; do
    echo "  passed   ${stage}"
  done
  if ((rc != 0)) && [[ -n "${current}" ]]; then
    echo "  FAILED   ${current}"
  fi
  for stage in "${skipped[@]}"; do
    echo "  skipped  ${stage}"
  done
  if ((rc == 0)); then
    echo "all stages passed"
  else
    echo "test.sh failed (exit status ${rc})"
  fi
}
trap on_exit EXIT

# run_stage NAME COMMAND...: runs one stage, timing it; a failure ends the script.
run_stage() {
  local name=$1
  shift
  current=${name}
  local start=${SECONDS}
  echo
  echo "==== ${name} ===="
  "$@"
  passed+=("${name} ($((SECONDS - start)) s)")
  current=""
}

# Sanitizer runtimes can refuse to start: ThreadSanitizer on kernels with a high
# vm.mmap_rnd_bits ("unexpected memory mapping"), LeakSanitizer where ptrace is not
# allowed. Each probe builds a small threaded program with the sanitizer and runs
# it; the results decide how the sanitizer stages run.
probe_program() {
  cat <<'EOF'
#include <atomic>
#include <memory>
#include <thread>
#include <vector>
int main() {
  auto counter = std::make_unique<std::atomic<int>>(0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] { counter->fetch_add(1, std::memory_order_relaxed); });
  }
  for (auto& t : threads) {
    t.join();
  }
  return counter->load() == 4 ? 0 : 1;
}
EOF
}

# probe_build NAME FLAGS...: compiles the probe into ${probe_dir}/NAME.
probe_build() {
  local name=$1
  shift
  if [[ -z "${probe_dir}" ]]; then
    probe_dir=$(mktemp -d "${TMPDIR:-/tmp}/asyncopt-probe.XXXXXX")
    probe_program >"${probe_dir}/probe.cpp"
  fi
  "${CXX:-c++}" -std=c++20 -O1 -g "$@" -pthread "${probe_dir}/probe.cpp" -o "${probe_dir}/${name}"
}

# choose_runner NAME: sets `runner` to the command prefix under which the sanitized
# probe NAME starts: nothing, or setarch -R (address-space randomization off) when
# only that makes it start. Fails, leaving the probe's output in NAME.log, when
# neither works.
choose_runner() {
  local name=$1
  runner=()
  if "${probe_dir}/${name}" >"${probe_dir}/${name}.log" 2>&1; then
    return 0
  fi
  if command -v setarch >/dev/null 2>&1 &&
    setarch "$(uname -m)" -R "${probe_dir}/${name}" >/dev/null 2>&1; then
    echo "test.sh: ${name} binaries start only with address-space randomization off here; running them under setarch -R"
    runner=(setarch "$(uname -m)" -R)
    return 0
  fi
  return 1
}

probe_failed() {
  echo "test.sh: a program built with $2 cannot run on this machine:" >&2
  cat "${probe_dir}/$1.log" >&2
  return 1
}

configure_build_test() {
  local preset=$1
  shift
  "$@" cmake --preset "${preset}"
  # Catch2 lists each test binary's cases right after linking it, so the build runs
  # sanitized binaries too.
  "$@" cmake --build --preset "${preset}" --parallel "${jobs}"
  "$@" ctest --preset "${preset}" --parallel "${jobs}"
}

stage_dev() {
  configure_build_test dev
}

stage_tsan() {
  probe_build tsan -fsanitize=thread
  local runner
  choose_runner tsan || probe_failed tsan -fsanitize=thread
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:${TSAN_OPTIONS}}"
  configure_build_test tsan "${runner[@]}"
}

stage_asan_ubsan() {
  probe_build asan -fsanitize=address,undefined
  local runner
  local leaks=1
  if ! ASAN_OPTIONS=detect_leaks=1 choose_runner asan; then
    if ASAN_OPTIONS=detect_leaks=0 choose_runner asan; then
      echo "test.sh: LeakSanitizer cannot run here (ptrace restricted?); leak detection is off" >&2
      leaks=0
    else
      probe_failed asan -fsanitize=address,undefined
    fi
  fi
  export ASAN_OPTIONS="detect_leaks=${leaks}:abort_on_error=1:check_initialization_order=1:strict_init_order=1${ASAN_OPTIONS:+:${ASAN_OPTIONS}}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:${UBSAN_OPTIONS}}"
  configure_build_test asan-ubsan "${runner[@]}"
}

run_stage deps scripts/deps.sh
run_stage dev stage_dev
run_stage docs cmake --build --preset dev --target docs
run_stage conan scripts/conan.sh
if ((quick)); then
  skipped+=("tsan (--quick)" "asan-ubsan (--quick)")
else
  run_stage tsan stage_tsan
  run_stage asan-ubsan stage_asan_ubsan
fi

if [[ "${CI:-}" == "true" ]] && command -v ccache >/dev/null 2>&1; then
  ccache --show-stats || true
fi
