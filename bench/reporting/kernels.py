"""kernels: the dense update kernels (bench/kernels.cpp)."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from .common import (REPRODUCIBLE_PNG, TIME_SCALE, Check, criteria_table, ensure_matplotlib,
                     exit_status, fact_lines, iteration_runs, load_before_text, load_results,
                     machine_text, markdown_table, pyplot, run_facts, run_interleaved, save_figure,
                     size_label, write_text)

DESCRIPTION = ("the dense update kernels against a STREAM triad, Eigen and two-pass momentum "
               "(bench/kernels.cpp)")

RULES = ["sgd", "momentum_correction", "heavy_ball", "delay_compensated",
         "adaptive_delay_compensated", "adam"]
FUSED_MOMENTUM = ["momentum_correction", "heavy_ball"]
TYPES = ["float", "double"]
CHECK_TYPE = "float"
CHECK_N = 1 << 26

TRIAD_RATIO = (">=", 0.90, "0.90")
TWO_PASS_SPEEDUP = (">=", 1.14, "1.14")  # 0.95 x 6/5: two passes move 6 arrays, one 5
EIGEN_TIME_RATIO = ("<=", 1.05, "1.05")

# Full runs: every repetition runs for at least MIN_TIME s, repetitions are interleaved in a
# random order so that a burst of other work spreads over all benchmarks instead of landing
# on one, and the report takes medians.
FULL = {"min_time": 0.1, "repetitions": 5,
        "expect": "about 2.5 minutes on two cores; the output comes at the end"}
QUICK = {"min_time": 0.01, "repetitions": 1, "expect": "about 15 seconds"}


@dataclasses.dataclass
class Point:
    """One benchmark at one length: medians over its repetitions."""
    name: str  # without the length
    n: int
    cpu_seconds: float  # per iteration
    real_seconds: float
    bytes_per_second: float
    repetitions: int
    spread: float  # (max - min) / median of the per-repetition times; 0 with one repetition


def load_points(data: dict) -> dict[tuple[str, int], Point]:
    """Groups the JSON's per-repetition runs by benchmark and takes medians (times and
    bytes/s alike; with an odd count the median bytes/s is that of the median time)."""
    runs: dict[str, list[dict]] = {}
    for bench in iteration_runs(data):
        runs.setdefault(bench["run_name"], []).append(bench)
    points = {}
    for run_name, reps in runs.items():
        base, _, n_text = run_name.rpartition("/")
        if not n_text.isdigit():
            continue
        cpu = [r["cpu_time"] * TIME_SCALE[r["time_unit"]] for r in reps]
        real = [r["real_time"] * TIME_SCALE[r["time_unit"]] for r in reps]
        rates = [r.get("bytes_per_second", float("nan")) for r in reps]
        median_cpu = statistics.median(cpu)
        spread = (max(cpu) - min(cpu)) / median_cpu if len(cpu) > 1 and median_cpu > 0 else 0.0
        points[(base, int(n_text))] = Point(base, int(n_text), median_cpu,
                                            statistics.median(real), statistics.median(rates),
                                            len(reps), spread)
    return points


def benchmark_order(names: set[str]) -> list[str]:
    """Row order of the tables: baselines of bandwidth first, then each rule with its own
    baselines; anything unexpected at the end, sorted."""
    order = ["baseline/triad", "baseline/scalar_sgd"]
    for rule in RULES:
        order += [f"kernel/{rule}", f"baseline/eigen_{rule}", f"baseline/two_pass_{rule}"]
    known = [name for name in order if name in names]
    return known + sorted(names - set(order))


def type_benchmarks(points: dict[tuple[str, int], Point], type_name: str) -> set[str]:
    """The benchmarks of one element type, without the type."""
    return {name.rpartition("/")[0] for name, _ in points if name.rpartition("/")[2] == type_name}


def ratios(points: dict[tuple[str, int], Point], type_name: str, n: int) -> list[Check]:
    """The criteria at one type and length (the CHECKs use float at 64Mi)."""

    def get(name: str) -> Point | None:
        return points.get((f"{name}/{type_name}", n))

    def ratio(a: float | None, b: float | None) -> float | None:
        if a is None or b is None or b == 0:
            return None
        return a / b

    checks = []
    triad = get("baseline/triad")
    for rule in RULES:
        kernel = get(f"kernel/{rule}")
        value = ratio(kernel and kernel.bytes_per_second, triad and triad.bytes_per_second)
        checks.append(Check(f"bandwidth_vs_triad/{rule}", value, *TRIAD_RATIO))
    for rule in FUSED_MOMENTUM:
        kernel = get(f"kernel/{rule}")
        two_pass = get(f"baseline/two_pass_{rule}")
        value = ratio(two_pass and two_pass.cpu_seconds, kernel and kernel.cpu_seconds)
        checks.append(Check(f"speedup_vs_two_pass/{rule}", value, *TWO_PASS_SPEEDUP))
    for rule in RULES:
        kernel = get(f"kernel/{rule}")
        eigen = get(f"baseline/eigen_{rule}")
        value = ratio(kernel and kernel.cpu_seconds, eigen and eigen.cpu_seconds)
        checks.append(Check(f"time_vs_eigen/{rule}", value, *EIGEN_TIME_RATIO))
    return checks


def run_benchmark(binary: Path, json_path: Path, quick: bool) -> dict:
    return run_interleaved(binary, json_path, QUICK if quick else FULL, quick)


def markdown(data: dict, points: dict[tuple[str, int], Point], checks: list[Check]) -> str:
    context = data.get("context", {})
    run = data.get("asyncopt_run", {})
    sizes = sorted({n for _, n in points})
    lines = ["# Update kernels against the memory bandwidth", "",
             "Generated by `bench/report kernels` from one run of `bench_kernels`; "
             "see [../benchmarks.md](../benchmarks.md) for what each benchmark and criterion "
             "means. GB/s is 10^9 bytes per second of the bytes each update must move, over "
             "the thread's CPU time; every value is the median of the repetitions.", ""]
    caches = ", ".join(f"L{c['level']} {c['type'].lower()} {c['size'] // 1024} KiB"
                       for c in context.get("caches", []) if c.get("type") != "Instruction")
    lines += fact_lines([
        ("date", context.get("date", "?")),
        ("machine", f"{machine_text(run, context)}; {caches}"),
        ("repetitions", f"{run.get('repetitions', '?')} per benchmark, at least "
                        f"{run.get('min_time', '?')} s each, interleaved in random order"),
        ("load before", load_before_text(run)),
        *run_facts(run),
    ])
    lines += ["", f"## Criteria ({CHECK_TYPE}, n = {size_label(CHECK_N)}, one thread)", ""]
    lines += criteria_table(checks)
    for type_name in TYPES:
        names = type_benchmarks(points, type_name)
        if not names:
            continue
        lines += ["", f"## {type_name}: GB/s", ""]
        header = ["benchmark"] + [size_label(n) for n in sizes] + \
                 [f"spread at {size_label(sizes[-1])}"]
        rows = []
        for name in benchmark_order(names):
            row = [f"`{name}`"]
            for n in sizes:
                p = points.get((f"{name}/{type_name}", n))
                row.append("" if p is None else f"{p.bytes_per_second / 1e9:.1f}")
            last = points.get((f"{name}/{type_name}", sizes[-1]))
            row.append("" if last is None else f"{last.spread:.0%}")
            rows.append(row)
        lines += markdown_table(header, rows, ["l"] + ["r"] * (len(sizes) + 1))
        lines += ["", f"### {type_name}: the criteria's ratios at every n", ""]
        by_size = {n: ratios(points, type_name, n) for n in sizes}
        rows = []
        for index, check in enumerate(by_size[sizes[0]]):
            row = [check.name, f"{check.op} {check.target_text}"]
            for n in sizes:
                value = by_size[n][index].value
                row.append("" if value is None else f"{value:.2f}")
            rows.append(row)
        lines += markdown_table(["ratio", "goal"] + [size_label(n) for n in sizes], rows,
                                ["l", "l"] + ["r"] * len(sizes))
    lines += ["", "Spread: (slowest - fastest) / median of the repetitions' times.", ""]
    return "\n".join(lines)


PLOT_Y_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


def plot(points: dict[tuple[str, int], Point], path: Path) -> None:
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    sizes = sorted({n for _, n in points})
    colors = dict(zip(RULES, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, len(TYPES), figsize=(13, 6), sharey=True)
    for ax, type_name in zip(axes, TYPES):
        for name in benchmark_order(type_benchmarks(points, type_name)):
            xs = [n for n in sizes if (f"{name}/{type_name}", n) in points]
            ys = [points[(f"{name}/{type_name}", n)].bytes_per_second / 1e9 for n in xs]
            kind, _, label = name.partition("/")
            style = {"marker": "o", "markersize": 4}
            if name == "baseline/triad":
                style.update(color="black", linewidth=2.5)
            elif name == "baseline/scalar_sgd":
                style.update(color="0.55", linestyle=":", linewidth=1.5)
            else:
                rule = next((r for r in sorted(RULES, key=len, reverse=True)
                             if label == r or label.endswith("_" + r)), None)
                style["color"] = colors.get(rule, "0.3")
                if label.startswith("eigen_"):
                    style.update(linestyle="--", linewidth=1.0, marker="s", markersize=3)
                elif label.startswith("two_pass_"):
                    style.update(linestyle="-.", linewidth=1.0, marker="^", markersize=3)
                else:
                    style.update(linewidth=2.0)
            ax.plot(xs, ys, label=f"{kind}/{label}", **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([size_label(n) for n in sizes])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"n ({type_name} elements per array)")
        ax.set_title(type_name)
        ax.grid(True, which="both", alpha=0.3)
    rates = [p.bytes_per_second / 1e9 for p in points.values() if p.bytes_per_second > 0]
    low, high = min(rates) / 1.25, max(rates) * 1.25
    ticks = [t for t in PLOT_Y_TICKS if low <= t <= high]
    axes[0].set_ylim(low, high)
    axes[0].set_yticks(ticks)
    axes[0].set_yticklabels([f"{t:g}" for t in ticks])
    axes[0].set_ylabel("GB/s (bytes the update must move)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("asyncopt update kernels, one thread (median of repetitions)")
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    save_figure(fig, path, dpi=100, metadata=REPRODUCIBLE_PNG)


def report(args: argparse.Namespace) -> int:
    ensure_matplotlib()
    results = load_results(args, "bench_kernels", run_benchmark, load_points)
    points = results.points
    checks = ratios(points, CHECK_TYPE, CHECK_N)
    write_text(results.out / "kernels.md", markdown(results.data, points, checks))
    plot(points, results.out / "kernels.png")
    return exit_status(checks, results.quick)
