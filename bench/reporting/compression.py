"""compression: the codecs' encode + decode against a memory copy (bench/compression.cpp)."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from .common import (REPRODUCIBLE_PNG, TIME_SCALE, Check, criteria_table, ensure_matplotlib,
                     exit_status, fact_lines, iteration_runs, load_before_text, load_results,
                     machine_text, markdown_table, pyplot, run_facts, run_interleaved, save_figure,
                     size_label, write_text)

DESCRIPTION = ("the compression codecs' encode + decode against a memory copy "
               "(bench/compression.cpp)")

CODECS = ["identity", "fp16", "bf16", "sign", "qsgd", "top_k", "random_k", "powersgd"]
ELEMENT_WISE = ["identity", "fp16", "bf16", "sign", "qsgd"]
CHECK_SIZES = [1 << 20, 1 << 24]
COPY_RATIO = (">=", 0.5, "0.5")

# Bytes each codec's encode + decode must move per 4-byte input value (reads + writes, no
# write-allocate), against a copy's 8: the most of copy bandwidth it can reach when both run
# at the memory's pace.
TRAFFIC = {
    "identity": 16.0,      # encode: read 4, write 4; decode: read 4, write 4
    "fp16": 12.0,          # read 4, write 2; read 2, write 4
    "bf16": 12.0,
    "sign": 8.0 + 0.25,    # one pass: read 4, write 1/8; decode: read 1/8, write 4
    "qsgd": 4.0 + 5.0 + 5.0,  # the norm: read 4; quantize: read 4, write 1; decode: read 1, write 4
}

FULL = {"min_time": 0.2, "repetitions": 5,
        "expect": "about 1.5 minutes; the output comes at the end"}
QUICK = {"min_time": 0.01, "repetitions": 1, "expect": "about 10 seconds"}


@dataclasses.dataclass
class Point:
    """One benchmark at one length: medians over its repetitions."""
    name: str  # baseline/copy or codec/<name>
    n: int
    seconds: float
    bytes_per_second: float  # of input
    payload_bytes: float
    spread: float


def load_points(data: dict) -> dict[tuple[str, int], Point]:
    runs: dict[str, list[dict]] = {}
    for bench in iteration_runs(data):
        runs.setdefault(bench["run_name"], []).append(bench)
    points = {}
    for run_name, reps in runs.items():
        parts = run_name.split("/")
        if len(parts) < 3 or not parts[2].isdigit():
            continue
        name, n = "/".join(parts[:2]), int(parts[2])
        times = [r["real_time"] * TIME_SCALE[r["time_unit"]] for r in reps]
        rates = [r.get("bytes_per_second", float("nan")) for r in reps]
        payload = [r.get("payload_bytes", float("nan")) for r in reps]
        median = statistics.median(times)
        spread = (max(times) - min(times)) / median if len(times) > 1 and median > 0 else 0.0
        points[(name, n)] = Point(name, n, median, statistics.median(rates),
                                  statistics.median(payload), spread)
    return points


def ratio(points: dict, codec: str, n: int) -> float | None:
    p = points.get((f"codec/{codec}", n))
    copy = points.get(("baseline/copy", n))
    if p is None or copy is None or copy.bytes_per_second == 0:
        return None
    return p.bytes_per_second / copy.bytes_per_second


def checks(points: dict) -> list[Check]:
    return [Check(f"codec_vs_copy/{codec}/{size_label(n)}", ratio(points, codec, n), *COPY_RATIO)
            for n in CHECK_SIZES for codec in ELEMENT_WISE]


def bound(codec: str) -> float:
    """The most of a copy's rate a codec's encode + decode reaches when both run at the
    memory's pace: the copy's 8 bytes per value over the codec's traffic."""
    return 8.0 / TRAFFIC[codec]


def context(points: dict) -> list[str]:
    """Each element-wise codec's traffic bound against its measured ratio."""
    lines = []
    for codec in ELEMENT_WISE:
        measured = ", ".join(f"{size_label(n)} {value:.3f}" for n in CHECK_SIZES
                             if (value := ratio(points, codec, n)) is not None)
        lines.append(f"{codec}: moves {TRAFFIC[codec]:g} bytes per value against the copy's 8, "
                     f"so at most {bound(codec):.2f} of the copy; measured {measured}")
    return lines


def findings(points: dict) -> list[str]:
    """The criteria whose goal is the bound itself, and what the run could not measure."""
    lines = []
    for codec in ELEMENT_WISE:
        if bound(codec) <= COPY_RATIO[1]:
            lines.append(f"codec_vs_copy/{codec}: its encode and its decode are each a copy, so "
                         f"{bound(codec):.2f} of one copy is the bound and the goal sits on it; "
                         "which side a run lands on is noise")
    lines.append("round_time_with_top_k_1%_vs_uncompressed/1e7 over MPI: reported by "
                 "`bench/report mpi` (context: compressed_round_vs_uncompressed), which runs "
                 "the rounds under mpiexec")
    return lines


def run_benchmark(binary: Path, json_path: Path, quick: bool) -> dict:
    return run_interleaved(binary, json_path, QUICK if quick else FULL, quick)


def markdown(data: dict, points: dict, checks_: list[Check], context_: list[str],
             findings_: list[str]) -> str:
    context = data.get("context", {})
    run = data.get("asyncopt_run", {})
    sizes = sorted({n for _, n in points})
    lines = ["# Compression codecs against a memory copy", "",
             "Generated by `bench/report compression` from one run of `bench_compression`; see "
             "[../benchmarks.md](../benchmarks.md) for what each benchmark and criterion means. "
             "GB/s is 10^9 bytes of input (4 bytes per float) per second of wall time for an "
             "encode followed by a decode, one thread; every value is the median of the "
             "repetitions.", ""]
    lines += fact_lines([
        ("date", context.get("date", "?")),
        ("machine", machine_text(run, context)),
        ("repetitions", f"{run.get('repetitions', '?')} per benchmark, at least "
                        f"{run.get('min_time', '?')} s each, interleaved in random order"),
        ("load before", load_before_text(run)),
        *run_facts(run),
    ])
    lines += ["", "## Criteria (the element-wise codecs, float)", ""]
    lines += criteria_table(checks_)
    lines += ["", "Traffic bounds (same run):", ""]
    lines += [f"- {line}" for line in context_]
    if findings_:
        lines += ["", "Findings (same run):", ""]
        lines += [f"- FINDING {line}" for line in findings_]
    lines += ["", "## GB/s of input, and the ratio to the copy", ""]
    header = ["benchmark"] + [size_label(n) for n in sizes] + \
             [f"vs copy at {size_label(n)}" for n in sizes] + ["message at 1Mi (bytes)"]
    rows = []
    for name in ["baseline/copy"] + [f"codec/{c}" for c in CODECS]:
        row = [f"`{name}`"]
        for n in sizes:
            p = points.get((name, n))
            row.append("" if p is None else f"{p.bytes_per_second / 1e9:.2f}")
        for n in sizes:
            value = ratio(points, name.partition("/")[2], n) if name != "baseline/copy" else 1.0
            row.append("" if value is None else f"{value:.2f}")
        p = points.get((name, 1 << 20))
        row.append("" if p is None or name == "baseline/copy" else f"{p.payload_bytes:.0f}")
        rows.append(row)
    lines += markdown_table(header, rows, ["l"] + ["r"] * (2 * len(sizes) + 1))
    lines += ["", "Spread: (slowest - fastest) / median of the repetitions' times.", ""]
    return "\n".join(lines)


def plot(points: dict, path: Path) -> None:
    plt = pyplot()
    sizes = sorted({n for _, n in points})
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = dict(zip(CODECS, plt.get_cmap("tab10").colors))
    for name in ["baseline/copy"] + [f"codec/{c}" for c in CODECS]:
        xs = [n for n in sizes if (name, n) in points]
        ys = [points[(name, n)].bytes_per_second / 1e9 for n in xs]
        codec = name.partition("/")[2]
        style = {"marker": "o", "markersize": 4}
        if name == "baseline/copy":
            style.update(color="black", linewidth=2.5)
        else:
            style.update(color=colors.get(codec, "0.3"), linewidth=1.5)
            if codec not in ELEMENT_WISE:
                style.update(linestyle="--")
        ax.plot(xs, ys, label=name, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([size_label(n) for n in sizes])
    ax.set_xlabel("n (floats per message)")
    ax.set_ylabel("GB/s of input (encode + decode)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("asyncopt compression codecs, one thread (median of repetitions)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100, metadata=REPRODUCIBLE_PNG)


def report(args: argparse.Namespace) -> int:
    ensure_matplotlib()
    results = load_results(args, "bench_compression", run_benchmark, load_points)
    points = results.points
    checks_ = checks(points)
    context_ = context(points)
    findings_ = findings(points)
    write_text(results.out / "compression.md",
               markdown(results.data, points, checks_, context_, findings_))
    plot(points, results.out / "compression.png")
    for line in context_:
        print(f"context: {line}")
    for line in findings_:
        print(f"FINDING {line}")
    return exit_status(checks_, results.quick)
