"""mpi: one synchronous round of the MPI transport against a raw MPI_Allreduce loop
(bench/mpi.cpp)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
from pathlib import Path

from .common import (BUILD_DIR, Check, REPRODUCIBLE_PNG, ReportError, cpu_model, criteria_table,
                     decimal_size_label, ensure_matplotlib, exit_status, fact_lines, iteration_runs,
                     load_before_run, load_before_text, load_json, load_results, log_size_axes,
                     machine_text, markdown_table, pyplot, record_run, run_facts, run_measured,
                     sample_load, save_figure, value_text, write_text)

DESCRIPTION = ("one synchronous round of the MPI transport against a raw MPI_Allreduce loop "
               "with 2 and 4 processes (bench/mpi.cpp; needs MPI)")

KINDS = ["library", "raw", "raw_copies"]
KIND_LABELS = {"library": "library (push + clock)",
               "raw": "raw (MPI_Allreduce in place + fused update)",
               "raw_copies": ("raw_copies (raw + the library's passes: finiteness check, count "
                              "in its slot)")}
RANKS = [2, 4]
SIZES = [1_000, 100_000, 1_000_000, 10_000_000]
# Per-round times in microseconds, each the median over the repetitions.
COUNTERS = {"library": ["round_us", "round_max_us", "pull_us", "step_us", "collective_us"],
            "raw": ["round_us", "round_max_us", "allreduce_us", "update_us"],
            "raw_copies": ["round_us", "round_max_us", "check_us", "count_us",
                           "allreduce_us", "update_us"]}

VS_RAW = ("<=", 1.05, "1.05")

# The environment Open MPI needs to run as root (CI does).
MPI_ENVIRONMENT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

# Each size runs REPETITIONS blocks of each kind, each block at least MIN_BLOCK_TIME s of the
# slowest kind, the kinds alternating; the report takes medians over the repetitions.
FULL = {"min_block_time": 0.2, "repetitions": 15, "timeout": 900,
        "expect": "about a minute per number of processes on two cores; the output comes at "
                  "the end"}
QUICK = {"min_block_time": 0.01, "repetitions": 1, "timeout": 300,
         "expect": "a few seconds per number of processes"}


@dataclasses.dataclass
class Point:
    """One kind/ranks/n: the median of each counter over the repetitions."""
    kind: str
    ranks: int
    n: int
    counters: dict[str, float]
    repetitions: int
    spread: float  # (max - min) / median of the repetitions' round times

    def get(self, name: str) -> float | None:
        return self.counters.get(name)


def mpiexec() -> str:
    """The mpiexec CMake found for the release build, else the one on PATH."""
    cache = BUILD_DIR / "CMakeCache.txt"
    if cache.exists():
        for line in cache.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("MPIEXEC_EXECUTABLE:"):
                path = line.split("=", 1)[1].strip()
                if path and not path.endswith("-NOTFOUND"):
                    return path
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name)
        if found:
            return found
    raise ReportError("no mpiexec found: install Open MPI (openmpi-bin, scripts/deps.sh)")


def run_benchmark(binary: Path, json_path: Path, quick: bool) -> dict:
    settings = QUICK if quick else FULL
    launcher = mpiexec()
    for key, value in MPI_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    before = load_before_run("round times will be high and spreads wide")
    merged: dict = {"context": {}, "benchmarks": [], "traffic": [], "compressed": []}
    wall = own = other = 0.0
    for ranks in RANKS:
        part = json_path.with_name(f"{json_path.stem}-{ranks}.json")
        part.unlink(missing_ok=True)
        # --oversubscribe: more processes than cores; --timeout ends a job that hangs.
        command = [launcher, "-n", str(ranks), "--oversubscribe",
                   "--timeout", str(settings["timeout"]), str(binary),
                   f"--repetitions={settings['repetitions']}",
                   f"--min_block_time={settings['min_block_time']}",
                   f"--out={part}"]
        measured = run_measured(binary, command, settings["expect"], capture_stderr=True)
        data = load_json(part)
        context = data.get("context", {})
        if not merged["context"]:
            merged["context"] = {k: v for k, v in context.items() if k != "ranks"}
        merged["context"][f"clock_read_ns_{ranks}"] = context.get("clock_read_ns")
        merged["benchmarks"] += data.get("benchmarks", [])
        merged["traffic"] += data.get("traffic", [])
        merged["compressed"] += data.get("compressed", [])
        wall += measured.wall
        own += measured.own_cpu_seconds
        other += measured.other_cores * measured.wall
    after = sample_load()
    print(f"load after the run: {after.describe()}")
    json_path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return record_run(json_path, {
        "mode": "quick" if quick else "full",
        "cpu_model": cpu_model(),
        "launcher": f"{Path(launcher).name} -n P --oversubscribe",
        "ranks": RANKS,
        "min_block_time": settings["min_block_time"],
        "repetitions": settings["repetitions"],
        "wall_seconds": round(wall, 1),
        "idle_before": before.idle,
        "load_before": before.describe(),
        "load_after": after.describe(),
        "other_cores_during": round(other / wall, 2) if wall > 0 else 0.0,
        "own_cpu_seconds": round(own, 1),
    })


def load_points(data: dict) -> dict[tuple[str, int, int], Point]:
    runs: dict[tuple[str, int, int], list[dict]] = {}
    for bench in iteration_runs(data):
        kind = bench.get("kind")
        if kind not in COUNTERS or "ranks" not in bench or "n" not in bench:
            continue
        runs.setdefault((kind, int(bench["ranks"]), int(bench["n"])), []).append(bench)
    points = {}
    for key, reps in runs.items():
        counters = {name: statistics.median(r[name] for r in reps)
                    for name in COUNTERS[key[0]] if all(r.get(name) is not None for r in reps)}
        rounds = [r["round_us"] for r in reps]
        middle = counters.get("round_us", 0.0)
        spread = (max(rounds) - min(rounds)) / middle if len(rounds) > 1 and middle > 0 else 0.0
        points[key] = Point(key[0], key[1], key[2], counters, len(reps), spread)
    return points


def counter(points: dict, kind: str, ranks: int, n: int, name: str) -> float | None:
    p = points.get((kind, ranks, n))
    return None if p is None else p.get(name)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def gbps(n: int, microseconds: float | None) -> float | None:
    """Algorithm bandwidth of an all-reduce of n floats: 4n bytes over its time, in GB/s."""
    return None if not microseconds else 4 * n / (microseconds * 1e-6) * 1e-9


def sizes_of(points: dict) -> list[int]:
    return sorted({p.n for p in points.values()})


def checks(points: dict[tuple[str, int, int], Point]) -> list[Check]:
    """The library's round against the raw loop doing the same work: an MPI_Allreduce in place,
    the update, and the one read of each gradient that refuses NaN and Inf (raw_copies)."""
    criteria = []
    for ranks in RANKS:
        for n in SIZES:
            criteria.append(Check(f"round_time_vs_raw_same_work/{ranks}/{decimal_size_label(n)}",
                                  ratio(counter(points, "library", ranks, n, "round_us"),
                                        counter(points, "raw_copies", ranks, n, "round_us")),
                                  *VS_RAW))
    return criteria


def findings(points: dict[tuple[str, int, int], Point]) -> list[str]:
    """The issue's first goal, against a raw loop that does not validate its input: out of
    reach by the finiteness check's read of every gradient, whose share is printed beside."""
    lines = []
    for ranks in RANKS:
        for n in SIZES:
            raw = ratio(counter(points, "library", ranks, n, "round_us"),
                        counter(points, "raw", ranks, n, "round_us"))
            check = ratio(counter(points, "raw_copies", ranks, n, "check_us"),
                          counter(points, "raw", ranks, n, "round_us"))
            lines.append(f"round_time_vs_raw_allreduce/{ranks}/{decimal_size_label(n)}: "
                         f"{value_text(raw)} (goal <= 1.05 against a loop that does not "
                         f"validate; the finiteness check alone: {value_text(check)} of the "
                         "raw round)")
    lines.append("the raw loop does not check that the gradients are finite: the library's "
                 "round reads every gradient once more to refuse NaN and Inf before they reach "
                 "every process's parameters, and moves one float more (the count, in the slot "
                 "after the gradient in the buffer the store lends); a round that validates "
                 "cannot be faster than the raw loop plus that read, so the criteria compare "
                 "it with the raw loop doing those passes (raw_copies)")
    return lines


def traffic(data: dict) -> dict[int, dict[str, dict]]:
    """ranks -> consistency -> the optimize() run's counters."""
    result: dict[int, dict[str, dict]] = {}
    for entry in data.get("traffic", []):
        result.setdefault(int(entry["ranks"]), {})[entry["consistency"]] = entry
    return result


def context(points: dict[tuple[str, int, int], Point], data: dict) -> list[tuple[str, str]]:
    """Numbers that are not criteria: the raw all-reduce's bandwidth, the whole step against
    the raw round, how much of the gap the library's passes explain, and LocalSgd's bytes
    per example against Synchronous's."""
    lines = []
    for ranks in RANKS:
        for n in SIZES:
            where = f"{ranks}/{decimal_size_label(n)}"
            lines.append((f"raw allreduce GBps/{where} (algorithm bandwidth, 4n bytes / time)",
                          value_text(gbps(n, counter(points, "raw", ranks, n, "allreduce_us")))))
            lines.append((f"step_vs_raw/{where} (pull + push + clock)",
                          value_text(ratio(counter(points, "library", ranks, n, "step_us"),
                                           counter(points, "raw", ranks, n, "round_us")))))
            lines.append((f"raw_copies_vs_raw/{where} (raw + the library's passes)",
                          value_text(ratio(counter(points, "raw_copies", ranks, n, "round_us"),
                                           counter(points, "raw", ranks, n, "round_us")))))
    for ranks, runs in sorted(traffic(data).items()):
        sync, local = runs.get("Synchronous"), runs.get("LocalSgd")
        if sync is None or local is None:
            continue
        lines.append((f"synchronous_bytes_per_example/{ranks}",
                      value_text(sync["bytes_per_example"], "{:.2f}")))
        lines.append((f"local_sgd_bytes_per_example/{ranks} (period {local['period']})",
                      value_text(local["bytes_per_example"], "{:.2f}")))
        lines.append((f"local_sgd_vs_synchronous_bytes/{ranks}",
                      value_text(ratio(local["bytes_per_example"], sync["bytes_per_example"]))))
    for entry in data.get("compressed", []):
        where = f"{entry['ranks']}/{decimal_size_label(int(entry['n']))}"
        lines.append((f"compressed_round_vs_uncompressed/{where} ({entry['codec']}; "
                      f"{us(entry['round_us'])} us against {us(entry['uncompressed_round_us'])})",
                      value_text(ratio(entry["round_us"], entry["uncompressed_round_us"]))))
        lines.append((f"compressed_bytes_fraction/{where} ({entry['codec']})",
                      value_text(ratio(entry["compressed_bytes"], entry["uncompressed_bytes"]),
                                 "{:.4f}")))
    return lines


def us(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def markdown(data: dict, points: dict[tuple[str, int, int], Point],
             criteria: list[Check]) -> str:
    run = data.get("asyncopt_run", {})
    ctx = data.get("context", {})
    sizes = sizes_of(points)
    lines = ["# One synchronous round over MPI against a raw MPI_Allreduce loop", "",
             "Generated by `bench/report mpi` from one run of `bench_mpi` per number of "
             "processes; see [../benchmarks.md](../benchmarks.md) for what each kind of round "
             "and criterion means. Times are one round's, in microseconds: a block's mean over "
             "its rounds, averaged over the processes, then the median over the repetitions. "
             "The library's round is `push` + `clock`; the pull that follows it (the next "
             "step's read of the parameters) is in `step`.", ""]
    lines += fact_lines([
        ("date", ctx.get("date", "?")),
        ("machine", machine_text(run, ctx)),
        ("MPI", f"{ctx.get('mpi_library', '?')}, `{run.get('launcher', '?')}` "
                "(shared memory between the processes of one machine)"),
        ("library", "`AsyncOptimizer<float, update::Sgd, consistency::Synchronous, "
                    "transport::Mpi>::attach(w, 1)`: one worker per process"),
        ("raw", ctx.get("raw_allreduce", "?") + ", then `w[i] -= (lr / p) * g[i]`"),
        ("repetitions", f"{run.get('repetitions', '?')} blocks of each kind per size, each at "
                        f"least {run.get('min_block_time', '?')} s of the slowest kind, "
                        "the kinds alternating with a barrier before each block"),
        ("clock read", f"{value_text(ctx.get('clock_read_ns'), '{:.0f}')} ns, once per timed "
                       "part"),
        ("load before", load_before_text(run)),
        ("load after", run.get("load_after", "?")),
        *run_facts(run),
    ])
    lines += ["", "## Criteria", ""]
    lines += criteria_table(criteria)
    lines += ["", "Context, not criteria (same run):", ""]
    lines += markdown_table(["measure", "value"], [[name, text]
                                                   for name, text in context(points, data)],
                            ["l", "r"])
    lines += ["", "Findings (same run):", ""]
    lines += [f"- FINDING {line}" for line in findings(points)]
    for ranks in RANKS:
        rows = []
        for n in sizes:
            if ("library", ranks, n) not in points and ("raw", ranks, n) not in points:
                continue
            library = counter(points, "library", ranks, n, "round_us")
            raw = counter(points, "raw", ranks, n, "round_us")
            spreads = [points.get((kind, ranks, n)) for kind in KINDS]
            rows.append([decimal_size_label(n), f"{4 * n:,}", us(library), us(raw),
                         value_text(ratio(library, raw)),
                         us(counter(points, "raw_copies", ranks, n, "round_us")),
                         us(counter(points, "library", ranks, n, "step_us")),
                         value_text(gbps(n, counter(points, "raw", ranks, n, "allreduce_us")),
                                    "{:.2f}"),
                         value_text(gbps(n + 1, counter(points, "library", ranks, n,
                                                        "collective_us")), "{:.2f}"),
                         "/".join(f"{p.spread:.0%}" if p else "?" for p in spreads)])
        if not rows:
            continue
        lines += ["", f"## {ranks} processes", ""]
        lines += markdown_table(["n", "bytes", "library", "raw", "library / raw", "raw_copies",
                                 "step", "raw all-reduce GB/s", "library all-reduce GB/s",
                                 "spread"], rows, ["r"] * 10)
        parts = []
        for n in sizes:
            lib, raw, copies = (points.get((k, ranks, n)) for k in KINDS)
            if lib is None or raw is None or copies is None:
                continue
            collective = lib.get("collective_us")
            rest = (None if collective is None or lib.get("round_us") is None
                    else lib.get("round_us") - collective)
            parts.append([decimal_size_label(n), us(collective), us(rest),
                          us(raw.get("allreduce_us")),
                          us(raw.get("update_us")),
                          *(us(copies.get(name)) for name in COUNTERS["raw_copies"][2:])])
        if parts:
            lines += ["", f"Where the time goes, {ranks} processes (us per round):", ""]
            lines += markdown_table(["n", "library: collective", "library: the rest",
                                     "raw: all-reduce", "raw: update", "copies: check",
                                     "copies: count", "copies: all-reduce",
                                     "copies: update"],
                                    parts, ["r"] * 9)
    runs = traffic(data)
    if runs:
        rows = []
        for ranks, by_policy in sorted(runs.items()):
            for name in ("Synchronous", "LocalSgd"):
                t = by_policy.get(name)
                if t is None:
                    continue
                rows.append([str(ranks), f"`{name}`" + (f" (period {t['period']})"
                                                        if name == "LocalSgd" else ""),
                             f"{t['examples']:,}", f"{t['updates']:,}",
                             f"{t['collective_bytes']:,}", f"{t['bytes_per_example']:.2f}",
                             f"{t['final_loss']:.4g}"])
        first = next(iter(next(iter(runs.values())).values()))
        lines += ["", "## Bytes per example: LocalSgd against Synchronous", "",
                  f"`optimize()` on a least-squares problem of {first['dimension']} features "
                  f"and {first['examples_per_epoch']:,} examples, one worker per process, batches "
                  f"of {first['batch_size']}, {first['epochs']} epochs, `Sgd{{.learning_rate = "
                  "0.01}`; bytes are `Report::collective_bytes` (each all-reduce's buffer "
                  "counted once per process), examples `Report::examples`.", ""]
        lines += markdown_table(["processes", "policy", "examples", "updates",
                                 "collective bytes", "bytes per example", "final loss"], rows,
                                ["r", "l", "r", "r", "r", "r", "r"])
    lines += ["", "Spread: (slowest - fastest) / median of the repetitions' round times, for "
                  "library/raw/raw_copies. All-reduce GB/s: the algorithm bandwidth, 4n bytes "
                  "(4(n + 1) for the library's) over the all-reduce's time.", ""]
    return "\n".join(lines)


def plot(points: dict[tuple[str, int, int], Point], path: Path) -> None:
    plt = pyplot()
    sizes = sizes_of(points)
    colors = {"library": "tab:blue", "raw": "black", "raw_copies": "tab:orange"}
    markers = {"library": "o", "raw": "D", "raw_copies": "s"}
    fig, axes = plt.subplots(1, len(RANKS), figsize=(12, 5), sharey=True, squeeze=False)
    for ax, ranks in zip(axes[0], RANKS):
        for kind in KINDS:
            xs = [n for n in sizes if (kind, ranks, n) in points]
            if not xs:
                continue
            ys = [points[(kind, ranks, n)].get("round_us") for n in xs]
            ax.plot(xs, ys, marker=markers[kind], color=colors[kind],
                    linestyle="--" if kind == "raw" else "-",
                    linewidth=2.0 if kind == "raw" else 1.5, label=KIND_LABELS[kind])
        log_size_axes(ax, sizes, "n (floats; 4n bytes per all-reduce)", f"{ranks} processes")
    axes[0][0].set_ylabel("time per round (us)")
    fig.suptitle("asyncopt synchronous round over MPI against a raw MPI_Allreduce loop "
                 "(dashed; median of repetitions)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100, metadata=REPRODUCIBLE_PNG)


def report(args: argparse.Namespace) -> int:
    ensure_matplotlib()
    results = load_results(args, "bench_mpi", run_benchmark, load_points)
    points = results.points
    criteria = checks(points)
    write_text(results.out / "mpi.md", markdown(results.data, points, criteria))
    plot(points, results.out / "mpi.png")
    for name, text in context(points, results.data):
        print(f"context: {name}: {text}")
    for line in findings(points):
        print(f"FINDING {line}")
    return exit_status(criteria, results.quick)
