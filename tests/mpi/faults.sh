#!/usr/bin/env bash
# Checkpoints and a killed process under mpiexec, with real processes on this machine:
#   faults.sh <mpiexec> <checkpoint_job> <sync|local> <processes>
#   1. the job runs uninterrupted, without checkpoints;
#   2. the same job with a checkpoint every 7 rounds, whose last process kills itself with
#      SIGKILL part-way: mpiexec must end the whole job with a non-zero status, within 60 s;
#   3. the same command again resumes from the checkpoint (computing fewer gradients) and
#      must end with the same parameters, bit for bit, as the uninterrupted run;
#   4. a checkpoint with a flipped byte is refused (checksum) with a non-zero status.
# Every run is bounded by mpiexec's --timeout and timeout(1).
set -euo pipefail

mpiexec=$1
job=$2
policy=$3
processes=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/asyncopt-mpi-faults.XXXXXX")
trap 'rm -rf "${work}"' EXIT

fail() {
  echo "faults.sh ${policy}: FAILED: $*" >&2
  for log in "${work}"/*.log; do
    [[ -e "${log}" ]] || continue
    echo "---- ${log##*/}" >&2
    cat "${log}" >&2
  done
  exit 1
}

# run NAME ARGS...: the job under mpiexec; its exit status, output in NAME.log.
run() {
  local name=$1
  shift
  local status=0
  timeout 120 "${mpiexec}" -n "${processes}" --oversubscribe --timeout 100 "${job}" \
    --policy "${policy}" --epochs 3 "$@" >"${work}/${name}.log" 2>&1 || status=$?
  return "${status}"
}

run whole --out "${work}/whole.bin" || fail "the uninterrupted job failed"

start=${SECONDS}
status=0
run killed --out "${work}/killed.bin" --checkpoint "${work}/job.ckpt" --every 7 \
  --die-after 40 || status=$?
elapsed=$((SECONDS - start))
((status != 0)) || fail "the job with a killed process exited with status 0"
((status != 124)) || fail "the job with a killed process hung until timeout(1) ended it"
((elapsed <= 60)) || fail "the job with a killed process took ${elapsed} s to end"
[[ -f "${work}/job.ckpt" ]] || fail "no checkpoint was written before the kill"
[[ ! -e "${work}/killed.bin" ]] || fail "the killed job wrote its result"
echo "faults.sh ${policy}: the killed job ended with status ${status} after ${elapsed} s"

run resumed --out "${work}/resumed.bin" --checkpoint "${work}/job.ckpt" --every 7 ||
  fail "the resumed job failed"
gradients() { sed -n 's/^gradients: //p' "${work}/$1.log"; }
(($(gradients resumed) < $(gradients whole))) ||
  fail "the resumed job computed $(gradients resumed) gradients, no fewer than the whole job's $(gradients whole): it did not resume"
cmp -s "${work}/whole.bin" "${work}/resumed.bin" ||
  fail "the resumed job's parameters differ from the uninterrupted job's"
echo "faults.sh ${policy}: the resumed job computed $(gradients resumed) of the $(gradients whole) gradients and ended with the uninterrupted job's parameters, bit for bit"

# Flip one byte in the payload (after the 24-byte header).
printf '\xff' | dd of="${work}/job.ckpt" bs=1 seek=40 conv=notrunc status=none
status=0
run corrupt --out "${work}/corrupt.bin" --checkpoint "${work}/job.ckpt" --every 7 || status=$?
((status != 0 && status != 124)) || fail "a corrupt checkpoint was not refused (status ${status})"
grep -q "fails its checksum" "${work}/corrupt.log" ||
  fail "a corrupt checkpoint was refused without naming the checksum"
echo "faults.sh ${policy}: a corrupt checkpoint is refused: $(grep -m1 'checksum' "${work}/corrupt.log")"
