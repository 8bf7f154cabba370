#!/usr/bin/env bash
# The parameter-server job with real processes on 127.0.0.1:
#   ps_job.sh converge <bin dir> <port> 2 servers + 2 workers reach the test accuracy of
#                                          the same training in one process (shared
#                                          memory), within 0.02
#   ps_job.sh compressed <bin dir> <port> the converge job with top-k 5% and error feedback
#                                          on the pushes: about a tenth of the bytes, and a
#                                          model that trains
#   ps_job.sh worker <bin dir> <port>   kill -9 one of two workers under bounded
#                                          staleness: the other finishes all its epochs
#   ps_job.sh server <bin dir> <port>   kill -9 the server mid-run and restart it from
#                                          its checkpoint (checksum verified on load):
#                                          training completes, and the model's test
#                                          accuracy is within 0.03 of the same job run
#                                          without the kill (two asynchronous runs differ
#                                          by up to ~0.015 here)
#   ps_job.sh duplicate <bin dir> <port> a second worker process with the rank of a running
#                                          one is refused with an error naming the worker id
#   ps_job.sh descriptors <bin dir> <port> a server started with a soft descriptor limit of
#                                          256 raises it to the hard limit
# Every wait is bounded (timeout); every process is killed on exit.
set -euo pipefail

mode=$1
bin=$2
port=$3
endpoint="tcp://127.0.0.1:${port}"
dimension=7850
work=$(mktemp -d "${TMPDIR:-/tmp}/asyncopt-ps-faults.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -9 "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  done
  rm -rf "${work}"
}
trap cleanup EXIT

fail() {
  echo "ps_job.sh ${mode}: FAILED: $*" >&2
  for log in "${work}"/*.log; do
    echo "---- ${log##*/}" >&2
    cat "${log}" >&2
  done
  exit 1
}

# wait_for PID SECONDS: waits for the process to end, at most SECONDS; its exit status.
wait_for() {
  local pid=$1 limit=$2 waited=0
  while kill -0 "${pid}" 2>/dev/null; do
    if ((waited >= limit * 10)); then
      fail "process ${pid} still running after ${limit} s"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "${pid}"
}

# wait_for_line FILE PATTERN SECONDS
wait_for_line() {
  local file=$1 pattern=$2 limit=$3 waited=0
  until grep -q -- "${pattern}" "${file}" 2>/dev/null; do
    if ((waited >= limit * 10)); then
      fail "no line matching '${pattern}' in ${file##*/} after ${limit} s"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# two_servers_two_workers ARGS...: the job of the converge and compressed modes: servers
# for the two halves of the keys at ${endpoint} and ${second}, then workers of ranks 0 and 1
# over 12000 images for EPOCHS epochs, with ARGS given to every process; returns when both
# workers have finished.
two_servers_two_workers() {
  local epochs=$1
  shift
  second="tcp://127.0.0.1:$((port + 1))"
  local half=$((dimension / 2))
  local common=(--dimension "${dimension}" --workers 2 --rule sgd --lr 0.01 "$@")
  "${bin}/ps_server" --endpoint "${endpoint}" --end "${half}" "${common[@]}" \
    >"${work}/server0.log" 2>&1 &
  pids+=($!)
  "${bin}/ps_server" --endpoint "${second}" --begin "${half}" "${common[@]}" \
    >"${work}/server1.log" 2>&1 &
  pids+=($!)
  wait_for_line "${work}/server0.log" "listening" 20
  wait_for_line "${work}/server1.log" "listening" 20
  local worker=(--servers "${endpoint},${second}" --ranks 2 --limit 12000 --epochs "${epochs}" "$@")
  "${bin}/ps_worker" "${worker[@]}" --rank 0 >"${work}/w0.log" 2>&1 &
  local w0=$!
  pids+=("${w0}")
  "${bin}/ps_worker" "${worker[@]}" --rank 1 >"${work}/w1.log" 2>&1 &
  local w1=$!
  pids+=("${w1}")
  wait_for "${w0}" 180 || fail "worker 0 failed"
  wait_for "${w1}" 180 || fail "worker 1 failed"
}

case "${mode}" in
  converge)
    two_servers_two_workers 3
    accuracy=$("${bin}/ps_worker" --servers "${endpoint},${second}" --evaluate |
      sed -n 's/^test accuracy: //p')
    reference=$("${bin}/train_fashion_mnist" --limit 12000 --epochs 3 --workers 2 \
      --consistency locked --csv "${work}/reference.csv" | sed -n 's/^test accuracy: //p')
    echo "ps_job.sh converge: test accuracy ${accuracy} over ZeroMQ, ${reference} in one process"
    awk -v a="${accuracy}" -v r="${reference}" 'BEGIN { exit !(a >= r - 0.02) }' ||
      fail "test accuracy ${accuracy}, more than 0.02 below ${reference}"
    ;;
  compressed)
    # The same job with top-k 5% and error feedback on the pushes, set alike on the servers
    # and the workers: every worker reports its compressed bytes, about a tenth of the
    # uncompressed ones (a 4-byte index and a 4-byte value for 5% of the values, plus
    # headers), and the model trains (chance is 0.1).
    two_servers_two_workers 2 --compress topk:0.05,ef
    for log in "${work}/w0.log" "${work}/w1.log"; do
      percent=$(sed -n 's/^compressed messages: .* MB of .* MB (\(.*\)%)$/\1/p' "${log}")
      [[ -n "${percent}" ]] || fail "no compressed bytes in ${log}"
      awk -v p="${percent}" 'BEGIN { exit !(p > 9 && p < 12) }' ||
        fail "compressed to ${percent}% of the bytes, expected about 10%"
    done
    # Without --compress an observer is refused by these servers, with the reason.
    if "${bin}/ps_worker" --servers "${endpoint}" --evaluate >"${work}/plain.log" 2>&1; then
      fail "an observer without --compress was let in"
    fi
    grep -q "compresses its pushes otherwise than this server" "${work}/plain.log" ||
      fail "the refusal does not say why"
    accuracy=$("${bin}/ps_worker" --servers "${endpoint},${second}" --evaluate \
      --compress topk:0.05,ef | sed -n 's/^test accuracy: //p')
    echo "ps_job.sh compressed: test accuracy ${accuracy}, compressed to ${percent}%"
    awk -v a="${accuracy}" 'BEGIN { exit !(a >= 0.6) }' ||
      fail "test accuracy ${accuracy} below 0.6"
    ;;
  worker)
    # Staleness 1: without the dead worker being dropped, the survivor would wait forever.
    "${bin}/ps_server" --endpoint "${endpoint}" --dimension "${dimension}" --workers 2 \
      --consistency ssp --staleness 1 --heartbeat-ms 3000 >"${work}/server.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/server.log" "listening" 20
    worker=(--servers "${endpoint}" --ranks 2 --limit 4000 --timeout-ms 20000)
    "${bin}/ps_worker" "${worker[@]}" --rank 0 --epochs 6 >"${work}/w0.log" 2>&1 &
    survivor=$!
    pids+=("${survivor}")
    "${bin}/ps_worker" "${worker[@]}" --rank 1 --epochs 1000 >"${work}/w1.log" 2>&1 &
    victim=$!
    pids+=("${victim}")
    wait_for_line "${work}/w1.log" "epoch  1 " 60
    kill -9 "${victim}"
    wait "${victim}" 2>/dev/null || true
    wait_for "${survivor}" 120 || fail "the surviving worker failed"
    grep -q "epoch  6 " "${work}/w0.log" || fail "the surviving worker did not finish its 6 epochs"
    kill -INT "${pids[0]}"
    wait_for "${pids[0]}" 20 || true
    # Whether the server had to drop the victim depends on where the kill landed (between
    # epochs a worker has left the bound already); test_zmq checks the drop itself.
    echo "ps_job.sh worker: the survivor finished after its peer was killed"
    grep "workers dropped" "${work}/server.log"
    ;;
  server)
    server=("${bin}/ps_server" --endpoint "${endpoint}" --dimension "${dimension}" --workers 2
      --rule momentum --lr 0.01 --checkpoint "${work}/server.ckpt" --checkpoint-ms 200)
    "${server[@]}" >"${work}/server1.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/server1.log" "listening" 20
    worker=(--servers "${endpoint}" --ranks 2 --limit 20000 --epochs 3 --timeout-ms 30000)
    "${bin}/ps_worker" "${worker[@]}" --rank 0 >"${work}/w0.log" 2>&1 &
    pids+=($!)
    w0=$!
    "${bin}/ps_worker" "${worker[@]}" --rank 1 >"${work}/w1.log" 2>&1 &
    pids+=($!)
    w1=$!
    wait_for_line "${work}/w0.log" "epoch  1 " 60
    [[ -f "${work}/server.ckpt" ]] || fail "no checkpoint after the first epoch"
    kill -9 "${pids[0]}"
    wait "${pids[0]}" 2>/dev/null || true
    sleep 0.5
    "${server[@]}" >"${work}/server2.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/server2.log" "resumed from checkpoint" 20
    wait_for "${w0}" 180 || fail "worker 0 failed after the server restart"
    wait_for "${w1}" 180 || fail "worker 1 failed after the server restart"
    accuracy=$("${bin}/ps_worker" --servers "${endpoint}" --evaluate | sed -n 's/^test accuracy: //p')
    kill -9 "${pids[-1]}"
    wait "${pids[-1]}" 2>/dev/null || true
    # The same job without the kill, on a fresh server: the restarted run must end as well.
    rm -f "${work}/server.ckpt"
    "${server[@]}" >"${work}/server3.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/server3.log" "listening" 20
    "${bin}/ps_worker" "${worker[@]}" --rank 0 >"${work}/r0.log" 2>&1 &
    r0=$!
    pids+=("${r0}")
    "${bin}/ps_worker" "${worker[@]}" --rank 1 >"${work}/r1.log" 2>&1 &
    r1=$!
    pids+=("${r1}")
    wait_for "${r0}" 180 || fail "reference worker 0 failed"
    wait_for "${r1}" 180 || fail "reference worker 1 failed"
    reference=$("${bin}/ps_worker" --servers "${endpoint}" --evaluate | sed -n 's/^test accuracy: //p')
    echo "ps_job.sh server: test accuracy ${accuracy} after the restart, ${reference} without it"
    awk -v a="${accuracy}" -v r="${reference}" 'BEGIN { exit !(a >= r - 0.03) }' ||
      fail "test accuracy ${accuracy} after the restart, more than 0.03 below ${reference}"
    ;;
  duplicate)
    "${bin}/ps_server" --endpoint "${endpoint}" --dimension "${dimension}" --workers 2 \
      >"${work}/server.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/server.log" "listening" 20
    worker=(--servers "${endpoint}" --ranks 2 --limit 2000 --timeout-ms 20000)
    "${bin}/ps_worker" "${worker[@]}" --rank 0 --epochs 100000 >"${work}/w0.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/w0.log" "epoch  1 " 60
    "${bin}/ps_worker" "${worker[@]}" --rank 0 --epochs 1 >"${work}/again.log" 2>&1 &
    again=$!
    pids+=("${again}")
    if wait_for "${again}" 60; then
      fail "a second worker process with rank 0 ran"
    fi
    grep -q "error: asyncopt: worker id 0 is taken by another process that is still running" \
      "${work}/again.log" || fail "the second rank 0 did not say that worker id 0 is taken"
    kill -0 "${pids[1]}" || fail "the first rank 0 did not survive the second"
    echo "ps_job.sh duplicate: $(grep error "${work}/again.log")"
    ;;
  descriptors)
    hard=$(ulimit -H -n)
    (
      ulimit -S -n 256
      exec "${bin}/ps_server" --endpoint "${endpoint}" --dimension 10
    ) >"${work}/server.log" 2>&1 &
    pids+=($!)
    wait_for_line "${work}/server.log" "listening" 20
    grep -q "(up to ${hard} open descriptors)" "${work}/server.log" ||
      fail "started under ulimit -S -n 256, the server did not raise its limit to ${hard}"
    cat "${work}/server.log"
    ;;
  *)
    echo "usage: ps_job.sh converge|worker|server|duplicate|descriptors <bin dir> <port>" >&2
    exit 2
    ;;
esac
