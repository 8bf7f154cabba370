"""scaling: the sparse Hogwild! path with 1 and 2 workers (bench/scaling.cpp)."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from .common import (REPRODUCIBLE_PNG, TIME_SCALE, Check, LoadSample, cpu_model, criteria_table,
                     ensure_matplotlib, exit_status, fact_lines, iteration_runs, json_output_flags,
                     load_before_run, load_before_text, load_results, machine_text, markdown_table,
                     number, pyplot, record_run, run_facts, run_measured, save_figure, value_text,
                     write_text)

DESCRIPTION = ("samples per second of the sparse Hogwild! path with 1 and 2 workers, against "
               "hand-written loops (bench/scaling.cpp)")

# config -> label in tables and plots
CONFIGS = {
    "serial": "serial loop (plain loads and stores)",
    "serial_prefetch": "serial loop, next row prefetched",
    "plain": "plain Hogwild! loop (relaxed atomics)",
    "plain_prefetch": "plain Hogwild! loop, next row prefetched",
    "lock_free": "LockFree",
    "locked_striped": "Locked{} (striped)",
    "locked_one": "Locked{.stripes = 1} (one lock)",
    "handle": "LockFree, worker handles in a loop, no prefetch",
    "handle_prefetch": "LockFree handles, next row prefetched",
    "handle_lean": "LockFree handles, gradient by a direct loop",
    "handle_timed": "LockFree handles, prefetched, timed per call",
}
DENSE_CONFIGS = {
    "lock_free": "LockFree",
    "locked_striped": "Locked{} (striped)",
}
# Shorter labels for the plot's axis.
PLOT_LABELS = {
    "serial": "serial loop", "serial_prefetch": "serial loop,\nprefetch",
    "plain": "plain Hogwild!\nloop", "plain_prefetch": "plain loop,\nprefetch",
    "lock_free": "LockFree",
    "locked_striped": "Locked{}\n(striped)", "locked_one": "Locked\n(one lock)",
    "handle": "LockFree\nhandles", "handle_prefetch": "handles,\nprefetch",
    "handle_lean": "handles, direct\ngradient",
    "handle_timed": "handles,\ntimed",
}
BREAKDOWN_PARTS = ["prefetch", "touched", "pull", "touched_gradient", "push", "clock",
                   "between_calls"]

# (op, target, target text); the ratios are computed in checks().
SPEEDUP = (">=", 1.6, "1.6")
VS_PLAIN = ("<=", 1.15, "1.15")
VS_PREFETCHING_LOOP = (">=", 0.85, "0.85")  # the library against the same loop by hand
VS_ONE_GOOD_LOOP = (">=", 1.05, "1.05")  # two workers beat one prefetching serial loop
STRIPED_VS_ONE_LOCK = (">=", 1.0, "1.0")  # striping never loses to one lock on sparse rows

BUSY_BELOW = LoadSample.IDLE_BELOW  # a measurement started idle when every core was below it

# Before each measurement the benchmark waits up to idle_wait seconds for both cores to be
# idle (every 0.3 s window it samples counts towards it).
FULL = {"repetitions": 5, "load_sample_seconds": 0.3, "idle_wait": 5.0, "extra": [],
        "expect": "about 2 minutes on two quiet cores, up to 10 more when other work "
                  "comes and goes; the output comes at the end"}
QUICK = {"repetitions": 1, "load_sample_seconds": 0.1, "idle_wait": 0.0,
         "extra": ["--sparse_examples=30000", "--dense_examples=4000"],
         "expect": "about 10 seconds"}


@dataclasses.dataclass
class Point:
    """One benchmark (workload/config/workers): medians over its repetitions."""
    workload: str  # "sparse" or "dense"
    config: str
    workers: int
    examples: int
    epoch_seconds: float  # median wall time of one epoch
    samples_per_second: float  # median
    fastest: float  # samples per second of the fastest and slowest repetition
    slowest: float
    repetitions: int
    spread: float  # (slowest - fastest) / median of the epoch times
    middle_spread: float  # the same without the fastest and the slowest repetition
    busy: list[float]  # busiest core before each repetition (empty: not sampled)
    counters: dict[str, float]  # medians of the other counters

    @property
    def busy_starts(self) -> int:
        return sum(1 for b in self.busy if b >= BUSY_BELOW)


def load_points(data: dict) -> dict[tuple[str, str, int], Point]:
    runs: dict[tuple[str, str, int], list[dict]] = {}
    for bench in iteration_runs(data):
        parts = bench["run_name"].split("/")
        if len(parts) < 3 or not parts[2].isdigit():
            continue
        runs.setdefault((parts[0], parts[1], int(parts[2])), []).append(bench)
    points = {}
    skip = {"busy_max", "examples", "items_per_second", "idle_wait"}
    for key, reps in runs.items():
        times = [r["real_time"] * TIME_SCALE[r["time_unit"]] for r in reps]
        rates = [r.get("items_per_second", float("nan")) for r in reps]
        median_time = statistics.median(times)
        counter_names = {k for r in reps for k in r
                         if k.startswith("ns_") or k.startswith("cpu")} - skip
        counters = {k: statistics.median(r[k] for r in reps if k in r) for k in counter_names}
        points[key] = Point(
            workload=key[0], config=key[1], workers=key[2],
            examples=int(reps[0].get("examples", 0)),
            epoch_seconds=median_time, samples_per_second=statistics.median(rates),
            fastest=max(rates), slowest=min(rates), repetitions=len(reps),
            spread=(max(times) - min(times)) / median_time if len(times) > 1 else 0.0,
            middle_spread=((sorted(times)[-2] - sorted(times)[1]) / median_time
                           if len(times) > 3 else 0.0),
            busy=[r["busy_max"] for r in reps if "busy_max" in r], counters=counters)
    return points


# The criteria: (name, what is compared, numerator, denominator, goal), the benchmarks as
# (config, workers) on the sparse workload. "rate" compares samples per second, "time"
# epoch times.
CRITERIA = [
    ("speedup_vs_serial/lock_free_2_workers", "rate", ("lock_free", 2), ("serial", 1), SPEEDUP),
    ("epoch_time_vs_plain_loop/2_workers", "time", ("lock_free", 2), ("plain", 2), VS_PLAIN),
    ("rate_vs_prefetching_plain_loop/lock_free_2_workers", "rate", ("lock_free", 2),
     ("plain_prefetch", 2), VS_PREFETCHING_LOOP),
    ("rate_vs_prefetching_serial_loop/lock_free_1_worker", "rate", ("lock_free", 1),
     ("serial_prefetch", 1), VS_PREFETCHING_LOOP),
    ("rate_vs_prefetching_serial_loop/lock_free_2_workers", "rate", ("lock_free", 2),
     ("serial_prefetch", 1), VS_ONE_GOOD_LOOP),
    ("rate_striped_vs_one_lock/locked_1_worker", "rate", ("locked_striped", 1),
     ("locked_one", 1), STRIPED_VS_ONE_LOCK),
    ("rate_striped_vs_one_lock/locked_2_workers", "rate", ("locked_striped", 2),
     ("locked_one", 2), STRIPED_VS_ONE_LOCK),
]
# Ratios that are not criteria but say what the criteria rest on: how much of the library's
# speed is its prefetching (which the criteria's baselines do not do) and how the library
# and the hand-written loop scale by themselves; samples per second.
CONTEXT = [
    ("lock_free 2 workers / lock_free 1 worker", ("lock_free", 2), ("lock_free", 1)),
    ("plain 2 threads / plain 1 thread", ("plain", 2), ("plain", 1)),
    ("lock_free 2 workers / locked_one 2 workers", ("lock_free", 2), ("locked_one", 2)),
    ("prefetching serial loop / serial loop", ("serial_prefetch", 1), ("serial", 1)),
    ("locked_one 2 workers / serial loop", ("locked_one", 2), ("serial", 1)),
]


def sparse_ratio(points: dict[tuple[str, str, int], Point], measure: str,
                 numerator: tuple[str, int], denominator: tuple[str, int]) -> float | None:
    """numerator / denominator of two sparse benchmarks' samples per second ("rate") or
    epoch times ("time"); None when either is missing."""
    def value(key: tuple[str, int]) -> float | None:
        p = points.get(("sparse", *key))
        if p is None:
            return None
        return p.samples_per_second if measure == "rate" else p.epoch_seconds

    a, b = value(numerator), value(denominator)
    return None if a is None or b is None or b == 0 else a / b


def checks(points: dict[tuple[str, str, int], Point]) -> list[Check]:
    return [Check(name, sparse_ratio(points, measure, numerator, denominator), *goal)
            for name, measure, numerator, denominator, goal in CRITERIA]


def context(points: dict[tuple[str, str, int], Point]) -> list[tuple[str, str]]:
    return [(name, value_text(sparse_ratio(points, "rate", numerator, denominator)))
            for name, numerator, denominator in CONTEXT]


def findings(points: dict[tuple[str, str, int], Point]) -> list[str]:
    """What bounds the two-worker criteria on this machine, from the same run: how far the
    hand-written prefetching Hogwild! loop itself gets with its second thread, against the
    baselines those criteria name. A criterion above its bound is out of reach for any code
    that runs the same algorithm here."""
    def ratio_text(numerator: tuple[str, int], denominator: tuple[str, int]) -> str:
        return value_text(sparse_ratio(points, "rate", numerator, denominator))

    return [
        "bound of speedup_vs_serial/lock_free_2_workers: the prefetching plain loop on 2 "
        f"threads reaches {ratio_text(('plain_prefetch', 2), ('serial', 1))} of the serial "
        "loop (the library's 2 workers "
        f"{ratio_text(('lock_free', 2), ('plain_prefetch', 2))} of that loop)",
        "bound of rate_vs_prefetching_serial_loop/lock_free_2_workers: the prefetching plain "
        f"loop on 2 threads reaches {ratio_text(('plain_prefetch', 2), ('serial_prefetch', 1))}"
        " of the prefetching serial loop on 1: every step writes the bias and its row's "
        "weights, whose cache lines then move between the cores",
        "rate_striped_vs_one_lock: a scattered row touches nearly every stripe, so one lock "
        "per pull and per push is the least either policy takes; parity is the bound, and "
        "the ratio lands on either side of 1.0 from run to run",
    ]


# A criterion's benchmark whose middle repetitions (all but the fastest and the slowest)
# spread more than this, relative to the median epoch time, was disturbed for more than one
# repetition by something the load sampling cannot see (another machine on the same host
# taking a core or the memory), so that its median is not a measurement either: the report
# says so. One disturbed repetition moves the median little and is not flagged.
SPREAD_WARNING = 0.3
CRITERIA_BENCHMARKS = sorted({("sparse", *key) for _, _, numerator, denominator, _ in
                              CRITERIA for key in (numerator, denominator)})


def load_warnings(points: dict[tuple[str, str, int], Point]) -> list[str]:
    lines = []
    for key in order(points):
        p = points[key]
        if p.busy_starts:
            lines.append(f"WARNING: {'/'.join(map(str, key))}: {p.busy_starts} of {len(p.busy)} "
                         f"measurements started with a core busy (busiest "
                         f"{max(p.busy):.0%})")
    for key in CRITERIA_BENCHMARKS:
        p = points.get(key)
        if p is not None and p.middle_spread > SPREAD_WARNING:
            lines.append(f"WARNING: {'/'.join(map(str, key))}: its middle repetitions spread "
                         f"{p.middle_spread:.0%} of the median epoch time (all: fastest "
                         f"{p.fastest / 1e6:.2f} M, slowest {p.slowest / 1e6:.2f} M "
                         "samples/s): the run was disturbed; the criteria that use it are not "
                         "a measurement of this machine")
    return lines


def order(points: dict) -> list[tuple[str, str, int]]:
    keys = []
    for workload, configs in (("sparse", CONFIGS), ("dense", DENSE_CONFIGS)):
        for config in configs:
            keys += sorted(k for k in points if k[0] == workload and k[1] == config)
    return keys + sorted(set(points) - set(keys))


def run_benchmark(binary: Path, json_path: Path, quick: bool) -> dict:
    settings = QUICK if quick else FULL
    before = load_before_run("absolute numbers will be low and spreads wide, ratios are still "
                             "from one run")
    command = [str(binary), *settings["extra"],
               f"--load_sample_seconds={settings['load_sample_seconds']}",
               f"--idle_wait_seconds={settings['idle_wait']}",
               f"--benchmark_repetitions={settings['repetitions']}",
               "--benchmark_enable_random_interleaving=true",
               *json_output_flags(json_path)]
    measured = run_measured(binary, command, settings["expect"], capture_stderr=True)
    return record_run(json_path, {
        "mode": "quick" if quick else "full",
        "cpu_model": cpu_model(),
        "repetitions": settings["repetitions"],
        "load_sample_seconds": settings["load_sample_seconds"],
        "idle_wait": settings["idle_wait"],
        "wall_seconds": round(measured.wall, 1),
        "idle_before": before.idle,
        "load_before": before.describe(),
        "other_cores_during": round(measured.other_cores, 2),
        "checks": [line for line in measured.stderr.splitlines()
                   if line.startswith("check: ")],
    })


def markdown(data: dict, points: dict[tuple[str, str, int], Point],
             criteria: list[Check]) -> str:
    run = data.get("asyncopt_run", {})
    sparse_n = next((p.examples for p in points.values() if p.workload == "sparse"), 0)
    dense_n = next((p.examples for p in points.values() if p.workload == "dense"), 0)
    measurements = [b for p in points.values() for b in p.busy]
    busy_starts = sum(1 for b in measurements if b >= BUSY_BELOW)
    waited = sum(b.get("idle_wait", 0.0) for b in data.get("benchmarks", [])
                 if b.get("run_type", "iteration") == "iteration")
    iterations = next((b.get("iterations") for b in data.get("benchmarks", [])), "?")
    lines = ["# Scaling of the sparse Hogwild! path", "",
             "Generated by `bench/report scaling` from one run of `bench_scaling`; see "
             "[../benchmarks.md](../benchmarks.md) for what each benchmark and criterion means. "
             "Samples/s are examples per second of wall time over one epoch (shuffle included); "
             "every value is the median of the repetitions.", ""]
    lines += fact_lines([
        ("date", data.get("context", {}).get("date", "?")),
        ("machine", machine_text(run, data.get("context", {}))),
        ("sparse workload", f"logistic regression, SGD batch 1, lr 0.5, L2 1e-4 on touched "
                            f"weights, float, one epoch over generate_rcv1_like<float> with "
                            f"{sparse_n:,} rows"),
        ("dense control", f"softmax regression, SGD batch 8, lr 0.1, L2 1e-4, float, one epoch "
                          f"over {dense_n:,} Fashion-MNIST images" if dense_n else "not run"),
        ("repetitions", f"{run.get('repetitions', '?')} per benchmark of {iterations} epochs "
                        "each, interleaved in random order"),
        ("load before the run", load_before_text(run)),
        ("load before each measurement", f"{busy_starts} of {len(measurements)} measurements "
                                         f"started with a core {BUSY_BELOW:.0%} busy or more "
                                         f"(sampled for {run.get('load_sample_seconds', '?')} s, "
                                         f"waiting up to {run.get('idle_wait', '?')} s for "
                                         f"idle cores; {waited:.0f} s waited in all)"),
        *run_facts(run),
    ])
    if run.get("checks"):
        lines += ["", "The hand-written loops against the library (one thread, the library's "
                      "shuffle), before the benchmarks ran:", "", "```"]
        lines += [c.removeprefix("check: ") for c in run["checks"]]
        lines += ["```"]
    lines += ["", "## Criteria (sparse, 2 workers)", ""]
    lines += criteria_table(criteria)
    lines += ["", "Context, not criteria (samples per second, same run):", ""]
    lines += markdown_table(["ratio", "value"], [[name, value]
                                                 for name, value in context(points)],
                            ["l", "r"])
    lines += ["", "Findings (same run):", ""]
    lines += [f"- FINDING {line}" for line in findings(points)]

    serial = points.get(("sparse", "serial", 1))
    header = ["benchmark", "what it runs", "workers", "samples/s", "epoch (ms)", "vs serial",
              "ns per example per worker", "spread", "started busy"]
    for workload, configs, baseline, title in (
            ("sparse", CONFIGS, serial, "Sparse: samples per second"),
            ("dense", DENSE_CONFIGS, points.get(("dense", "lock_free", 1)),
             "Dense control: samples per second")):
        keys = [k for k in order(points) if k[0] == workload]
        if not keys:
            continue
        rows = []
        for key in keys:
            p = points[key]
            rows.append([f"`{'/'.join(map(str, key))}`", configs.get(p.config, p.config),
                         str(p.workers), f"{p.samples_per_second / 1e6:.3f} M",
                         f"{p.epoch_seconds * 1e3:.1f}",
                         "" if baseline is None else
                         f"{p.samples_per_second / baseline.samples_per_second:.2f}x",
                         f"{p.epoch_seconds * p.workers / p.examples * 1e9:.0f}"
                         if p.examples else "",
                         f"{p.spread:.0%}",
                         f"{p.busy_starts} of {len(p.busy)}" if p.busy else "not sampled"])
        head = list(header)
        if workload == "dense":
            head[5] = "vs LockFree, 1 worker"
        lines += ["", f"## {title}", ""]
        lines += markdown_table(head, rows, ["l", "l", "r", "r", "r", "r", "r", "r", "r"])

    timed = [points[k] for k in order(points) if k[:2] == ("sparse", "handle_timed")]
    if timed:
        lines += ["", "## Where a LockFree step's time goes", "",
                  "`sparse/handle_timed/<k>`: the worker-handle loop of `optimize()`'s calls, "
                  "prefetching included, with `step()` taken apart into the pull, the gradient, "
                  "the push and the clock it runs in one call, and a time-stamp between the "
                  "calls; nanoseconds of "
                  "one worker's time per example, medians. "
                  "`between_calls` is the loop itself plus the time stamps. The plain loops' "
                  "whole steps are given for comparison (their epoch time x workers / examples).",
                  ""]
        header = ["call"] + [f"{p.workers} worker{'s' if p.workers > 1 else ''}" for p in timed]
        rows = []
        for part in BREAKDOWN_PARTS:
            rows.append([f"`{part}`"] + [number(p.counters.get(f"ns_{part}"), "{:.0f}")
                                         for p in timed])
        sums = [sum(p.counters.get(f"ns_{part}", 0.0) for part in BREAKDOWN_PARTS)
                for p in timed]
        rows.append(["sum"] + [f"{total:.0f}" for total in sums])
        for config, label in (("plain", "plain Hogwild! loop, whole step"),
                              ("plain_prefetch", "prefetching plain loop, whole step")):
            plain_row = [label]
            for p in timed:
                plain = points.get(("sparse", config, p.workers))
                plain_row.append(
                    "?" if plain is None or not plain.examples else
                    f"{plain.epoch_seconds * plain.workers / plain.examples * 1e9:.0f}")
            rows.append(plain_row)
        lines += markdown_table(header, rows, ["l"] + ["r"] * len(timed))
    lines += ["", "Spread: (slowest - fastest) / median of the repetitions' epoch times. Started "
                  f"busy: repetitions that began with a core {BUSY_BELOW:.0%} busy or more.", ""]
    return "\n".join(lines)


def plot(points: dict[tuple[str, str, int], Point], path: Path) -> None:
    plt = pyplot()

    panels = [("sparse", CONFIGS), ("dense", DENSE_CONFIGS)]
    panels = [(w, c) for w, c in panels if any(k[0] == w for k in points)]
    ratios = [max(3, sum(1 for c in configs if any(k[:2] == (w, c) for k in points)))
              for w, configs in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 5.2), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    colors = {1: "tab:blue", 2: "tab:orange"}
    width = 0.38
    for ax, (workload, configs) in zip(axes[0], panels):
        names = [c for c in configs if any(k[:2] == (workload, c) for k in points)]
        for workers, offset in ((1, -width / 2), (2, width / 2)):
            xs, ys, low, high = [], [], [], []
            for i, config in enumerate(names):
                p = points.get((workload, config, workers))
                if p is None:
                    continue
                alone = (workload, config, 3 - workers) not in points
                xs.append(i + (0.0 if alone else offset))
                ys.append(p.samples_per_second / 1e6)
                low.append((p.samples_per_second - p.slowest) / 1e6)
                high.append((p.fastest - p.samples_per_second) / 1e6)
            ax.bar(xs, ys, width, yerr=[low, high], capsize=3, color=colors[workers],
                   label=f"{workers} worker{'s' if workers > 1 else ''}")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([PLOT_LABELS.get(c, c) for c in names], fontsize=8)
        ax.set_ylabel("samples per second (millions)")
        ax.set_title("sparse: RCV1-like logistic regression, batch 1" if workload == "sparse"
                     else "dense control: Fashion-MNIST softmax,\nbatch 8", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("asyncopt scaling (median of repetitions; whiskers: fastest and slowest)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100, metadata=REPRODUCIBLE_PNG)


def report(args: argparse.Namespace) -> int:
    ensure_matplotlib()
    results = load_results(args, "bench_scaling", run_benchmark, load_points)
    points = results.points
    for line in load_warnings(points):
        print(line)
    measurements = sum(len(p.busy) for p in points.values())
    busy = sum(p.busy_starts for p in points.values())
    if measurements:
        print(f"load before each measurement: {measurements - busy} of {measurements} started "
              f"with every core below {BUSY_BELOW:.0%} busy")
    criteria = checks(points)
    write_text(results.out / "scaling.md", markdown(results.data, points, criteria))
    plot(points, results.out / "scaling.png")
    for name, value in context(points):
        print(f"context: {name}: {value}")
    for line in findings(points):
        print(f"FINDING {line}")
    return exit_status(criteria, results.quick)
