"""zmq: the ZeroMQ parameter server on loopback against a raw echo (bench/zmq.cpp)."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from .common import (Check, REPRODUCIBLE_PNG, cpu_model, criteria_table, decimal_size_label,
                     ensure_matplotlib, exit_status, fact_lines, iteration_runs, json_output_flags,
                     load_before_run, load_before_text, load_results, log_size_axes, machine_text,
                     markdown_table, pyplot, record_run, run_facts, run_measured, sample_load,
                     save_figure, value_text, write_text)

DESCRIPTION = ("latency and throughput of the ZeroMQ parameter server on loopback against a raw "
               "DEALER/ROUTER echo (bench/zmq.cpp)")

OPS = ["push", "pull", "push_pull", "pull_push", "echo", "raw_push"]
OP_LABELS = {"push": "push", "pull": "pull",
             "push_pull": "push_pull (push, clock and pull in one exchange)",
             "pull_push": "pull_push (a pull, then a push: two exchanges)",
             "echo": "echo (raw DEALER/ROUTER)",
             "raw_push": "raw_push (raw DEALER/ROUTER, 8-byte ack)"}
WORKERS = [1, 2]
COUNTERS = ["p50_us", "p99_us", "mean_us", "GBps"]
LARGE = (100_000, 1_000_000)  # the lengths the throughput criteria and context use

VS_ECHO = ("<=", 1.3, "1.3")
P50_VS_ECHO_SMALL = ("<=", 1.15, "1.15")  # one float: the exchange is all latency
P50_VS_ECHO_LARGE = ("<=", 1.25, "1.25")
PUSH_VS_RAW_PUSH = (">=", 0.85, "0.85")  # push throughput / raw one-way push throughput

# Every benchmark runs 5 repetitions of at least MIN_TIME s, interleaved in random order; the
# report takes medians of each counter over the repetitions.
FULL = {"min_time": 0.3, "repetitions": 5,
        "expect": "about 2.5 minutes on two cores; the output comes at the end"}
QUICK = {"min_time": 0.02, "repetitions": 1, "expect": "about 10 seconds"}


@dataclasses.dataclass
class Point:
    """One benchmark (op/workers/n): medians of its counters over the repetitions."""
    op: str
    workers: int
    n: int
    p50_us: float
    p99_us: float
    mean_us: float
    gbps: float
    repetitions: int
    spread: float  # (max - min) / median of the repetitions' mean latencies


def load_points(data: dict) -> dict[tuple[str, int, int], Point]:
    runs: dict[tuple[str, int, int], list[dict]] = {}
    for bench in iteration_runs(data):
        parts = bench["run_name"].split("/")
        if len(parts) < 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        if not all(k in bench for k in COUNTERS):
            continue
        runs.setdefault((parts[0], int(parts[1]), int(parts[2])), []).append(bench)
    points = {}
    for key, reps in runs.items():
        median = {k: statistics.median(r[k] for r in reps) for k in COUNTERS}
        means = [r["mean_us"] for r in reps]
        spread = ((max(means) - min(means)) / median["mean_us"]
                  if len(means) > 1 and median["mean_us"] > 0 else 0.0)
        points[key] = Point(key[0], key[1], key[2], median["p50_us"], median["p99_us"],
                            median["mean_us"], median["GBps"], len(reps), spread)
    return points


def ratio(points: dict, numerator: tuple[str, int, int], denominator: tuple[str, int, int],
          field: str = "mean_us") -> float | None:
    a, b = points.get(numerator), points.get(denominator)
    if a is None or b is None or getattr(b, field) == 0:
        return None
    return getattr(a, field) / getattr(b, field)


def value(points: dict, key: tuple[str, int, int], field: str) -> float | None:
    p = points.get(key)
    return None if p is None else getattr(p, field)


def checks(points: dict[tuple[str, int, int], Point]) -> list[Check]:
    criteria = []
    for n in LARGE:
        criteria.append(Check(f"push_pull_vs_echo/{decimal_size_label(n)}",
                              ratio(points, ("push_pull", 1, n), ("echo", 1, n)), *VS_ECHO))
    criteria.append(Check("push_pull_p50_vs_echo_p50/1",
                          ratio(points, ("push_pull", 1, 1), ("echo", 1, 1), "p50_us"),
                          *P50_VS_ECHO_SMALL))
    for n in LARGE:
        criteria.append(Check(f"push_pull_p50_vs_echo_p50/{decimal_size_label(n)}",
                              ratio(points, ("push_pull", 1, n), ("echo", 1, n), "p50_us"),
                              *P50_VS_ECHO_LARGE))
    for n in LARGE:
        # Throughputs of the same bytes: the raw push's time over the push's.
        criteria.append(Check(f"push_throughput_vs_raw_push/{decimal_size_label(n)}",
                              ratio(points, ("raw_push", 1, n), ("push", 1, n)),
                              *PUSH_VS_RAW_PUSH))
    return criteria


def context(points: dict[tuple[str, int, int], Point]) -> list[tuple[str, str]]:
    """Numbers that are not criteria: the echo's own, the p50-based ratio, and 1 server + 2
    workers."""
    lines = []
    for workers in WORKERS:
        setup = f"1+{workers}"
        lines.append((f"echo {setup} p50_us/1",
                      value_text(value(points, ("echo", workers, 1), "p50_us"))))
        for n in LARGE:
            lines.append((f"echo {setup} GBps/{decimal_size_label(n)} (round trip, both ways)",
                          value_text(value(points, ("echo", workers, n), "gbps"))))
    for n in LARGE:
        lines.append((f"push_pull_vs_echo 1+1 p50/{decimal_size_label(n)}",
                      value_text(ratio(points, ("push_pull", 1, n), ("echo", 1, n), "p50_us"))))
    lines.append(("pull_push 1+1 p50_us/1 (two exchanges)",
                  value_text(value(points, ("pull_push", 1, 1), "p50_us"))))
    for n in LARGE:
        lines.append((f"pull_push_vs_echo 1+1/{decimal_size_label(n)} (two exchanges)",
                      value_text(ratio(points, ("pull_push", 1, n), ("echo", 1, n)))))
    for n in LARGE:
        lines.append((f"raw_push 1+1 GBps/{decimal_size_label(n)}",
                      value_text(value(points, ("raw_push", 1, n), "gbps"))))
        lines.append((f"push_vs_raw_push 1+1/{decimal_size_label(n)}",
                      value_text(ratio(points, ("push", 1, n), ("raw_push", 1, n)))))
    lines.append(("push_pull 1+2 p50_us/1",
                  value_text(value(points, ("push_pull", 2, 1), "p50_us"))))
    for n in LARGE:
        lines.append((f"push_pull_vs_echo 1+2/{decimal_size_label(n)}",
                      value_text(ratio(points, ("push_pull", 2, n), ("echo", 2, n)))))
    for op in ("push", "pull", "push_pull"):
        for n in LARGE:
            lines.append((f"{op} 1+2 GBps/{decimal_size_label(n)} (both workers)",
                          value_text(value(points, (op, 2, n), "gbps"))))
    for n in LARGE:
        lines.append((f"pull 1+1 GBps/{decimal_size_label(n)}",
                      value_text(value(points, ("pull", 1, n), "gbps"))))
    return lines


def run_benchmark(binary: Path, json_path: Path, quick: bool) -> dict:
    settings = QUICK if quick else FULL
    before = load_before_run("latencies will be high and spreads wide")
    command = [str(binary),
               f"--benchmark_min_time={settings['min_time']}",
               f"--benchmark_repetitions={settings['repetitions']}",
               "--benchmark_enable_random_interleaving=true",
               *json_output_flags(json_path)]
    # The benchmark's own CPU time covers all its threads: the workers, the server or echo
    # thread and ZeroMQ's I/O threads.
    measured = run_measured(binary, command, settings["expect"], capture_stderr=True)
    after = sample_load()
    print(f"load after the run: {after.describe()}")
    return record_run(json_path, {
        "mode": "quick" if quick else "full",
        "cpu_model": cpu_model(),
        "min_time": settings["min_time"],
        "repetitions": settings["repetitions"],
        "wall_seconds": round(measured.wall, 1),
        "idle_before": before.idle,
        "load_before": before.describe(),
        "load_after": after.describe(),
        "other_cores_during": round(measured.other_cores, 2),
        "own_cpu_seconds": round(measured.own_cpu_seconds, 1),
    })


def markdown(data: dict, points: dict[tuple[str, int, int], Point],
             criteria: list[Check]) -> str:
    run = data.get("asyncopt_run", {})
    sizes = sorted({p.n for p in points.values()})
    lines = ["# The ZeroMQ parameter server on loopback", "",
             "Generated by `bench/report zmq` from one run of `bench_zmq`; see "
             "[../benchmarks.md](../benchmarks.md) for what each benchmark and criterion means. "
             "Latencies are one operation's wall time, timed around each call; GB/s is 10^9 "
             "payload bytes per second (4n per push, pull or raw push, 2 x 4n per push_pull, "
             "pull_push and echo round trip) of all the run's workers together. Every value is "
             "the median of the repetitions.", ""]
    lines += fact_lines([
        ("date", data.get("context", {}).get("date", "?")),
        ("machine", machine_text(run, data.get("context", {}))),
        ("server", "`zmq::Server<float, update::Sgd, consistency::Locked>` on a thread of the "
                   "same process, `tcp://127.0.0.1`, default `ServerConfig` (heartbeats on)"),
        ("workers", "`AsyncOptimizer<float, update::Sgd, consistency::Locked, "
                    "transport::Zmq>::attach()` handles, dense pull and push of n floats"),
        ("repetitions", f"{run.get('repetitions', '?')} per benchmark, at least "
                        f"{run.get('min_time', '?')} s each, interleaved in random order"),
        ("load before", load_before_text(run)),
        ("load after", run.get("load_after", "?")),
        *run_facts(run),
    ])
    lines += ["", "## Criteria (1 server + 1 worker)", ""]
    lines += criteria_table(criteria)
    lines += ["", "Context, not criteria (same run):", ""]
    lines += markdown_table(["measure", "value"], [[name, text]
                                                   for name, text in context(points)],
                            ["l", "r"])
    for workers in WORKERS:
        title = (f"1 server + {workers} worker{'s' if workers > 1 else ''}")
        rows = []
        for n in sizes:
            echo = points.get(("echo", workers, n))
            for op in OPS:
                p = points.get((op, workers, n))
                if p is None:
                    continue
                versus = ("" if echo is None or op in ("echo", "raw_push") or
                          echo.mean_us == 0 else f"{p.mean_us / echo.mean_us:.2f}")
                rows.append([decimal_size_label(n), f"{n * 4:,}", OP_LABELS[op],
                             f"{p.p50_us:.1f}", f"{p.p99_us:.1f}", f"{p.mean_us:.1f}",
                             f"{p.gbps:.3f}", versus, f"{p.spread:.0%}"])
        if not rows:
            continue
        lines += ["", f"## {title}", ""]
        if workers > 1:
            lines += ["Latencies are per operation (both workers' operations together); GB/s "
                      "is both workers together.", ""]
        lines += markdown_table(["n", "bytes", "operation", "p50 (us)", "p99 (us)", "mean (us)",
                                 "GB/s", "mean / echo", "spread"], rows,
                                ["r", "r", "l", "r", "r", "r", "r", "r", "r"])
    lines += ["", "Spread: (slowest - fastest) / median of the repetitions' mean latencies. "
                  "mean / echo: the operation's mean latency over the echo's at the same n and "
                  "number of workers.", ""]
    return "\n".join(lines)


def plot(points: dict[tuple[str, int, int], Point], path: Path) -> None:
    plt = pyplot()

    sizes = sorted({p.n for p in points.values()})
    colors = {"push": "tab:blue", "pull": "tab:green", "push_pull": "tab:red",
              "pull_push": "tab:orange", "echo": "black", "raw_push": "tab:cyan"}
    markers = {"push": "o", "pull": "s", "push_pull": "^", "pull_push": "<", "echo": "D",
               "raw_push": "v"}
    fig, axes = plt.subplots(1, len(WORKERS), figsize=(12, 5), sharey=True, squeeze=False)
    for ax, workers in zip(axes[0], WORKERS):
        for op in OPS:
            xs = [n for n in sizes if (op, workers, n) in points]
            if not xs:
                continue
            ys = [points[(op, workers, n)].p50_us for n in xs]
            raw = op in ("echo", "raw_push")
            ax.plot(xs, ys, marker=markers[op], color=colors[op],
                    linestyle="--" if raw else "-", linewidth=2.0 if raw else 1.5,
                    label=OP_LABELS[op])
        log_size_axes(ax, sizes, "n (floats per message; 4n bytes)",
                      f"1 server + {workers} worker{'s' if workers > 1 else ''}")
    axes[0][0].set_ylabel("p50 latency per operation (us)")
    fig.suptitle("asyncopt ZeroMQ parameter server on loopback TCP against raw DEALER/ROUTER "
                 "messages (dashed; median of repetitions)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100, metadata=REPRODUCIBLE_PNG)


def report(args: argparse.Namespace) -> int:
    ensure_matplotlib()
    results = load_results(args, "bench_zmq", run_benchmark, load_points)
    points = results.points
    criteria = checks(points)
    write_text(results.out / "zmq.md", markdown(results.data, points, criteria))
    plot(points, results.out / "zmq.png")
    for name, text in context(points):
        print(f"context: {name}: {text}")
    return exit_status(criteria, results.quick)
