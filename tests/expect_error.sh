#!/usr/bin/env bash
# Bad input to a program must end it with a clear error:
#   expect_error.sh [--occupy <ps_server> <endpoint>] <pattern> <command> [args...]
# passes when the command exits with a non-zero status of its own (not killed by the 60 s
# limit) and the first line it writes to stderr matches the extended regular expression
# <pattern>. --occupy first starts <ps_server> listening on <endpoint> (a port in use), and
# kills it afterwards.
set -uo pipefail

occupant=
work=$(mktemp -d "${TMPDIR:-/tmp}/asyncopt-expect-error.XXXXXX")
cleanup() {
  if [[ -n "${occupant}" ]]; then
    kill -9 "${occupant}" 2>/dev/null
    wait "${occupant}" 2>/dev/null
  fi
  rm -rf "${work}"
}
trap cleanup EXIT

if [[ "${1:-}" == --occupy ]]; then
  "$2" --endpoint "$3" --dimension 4 >"${work}/occupant.log" 2>&1 &
  occupant=$!
  shift 3
  for ((k = 0; k < 200; ++k)); do
    grep -q listening "${work}/occupant.log" && break
    sleep 0.1
  done
  grep -q listening "${work}/occupant.log" || {
    echo "expect_error.sh: the occupying server did not start" >&2
    cat "${work}/occupant.log" >&2
    exit 1
  }
fi

pattern=$1
shift
timeout 60 "$@" >"${work}/stdout" 2>"${work}/stderr"
status=$?
first=$(head -n 1 "${work}/stderr")
echo "exit status ${status}; stderr:"
cat "${work}/stderr"
if ((status == 0 || status == 124 || status >= 128)); then
  echo "expect_error.sh: FAILED: exit status ${status}, expected an error exit" >&2
  exit 1
fi
if ! grep -qE -- "${pattern}" <<<"${first}"; then
  echo "expect_error.sh: FAILED: the first line of stderr does not match '${pattern}'" >&2
  exit 1
fi
