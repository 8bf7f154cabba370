"""What every suite shares: building and running a benchmark, the machine's load, the JSON
a run leaves, the CHECK lines and the Markdown and plots of the results."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent.parent
ENTRY = ROOT / "bench" / "report"  # the script that runs the suites
PRESET = "release"
BUILD_DIR = ROOT / "build" / PRESET
RESULTS_DIR = ROOT / "docs" / "results"
SYSTEM_PYTHON = Path("/usr/bin/python3")

# Google Benchmark's time units in seconds.
TIME_SCALE = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}

OTHER_WORK_WARNING = 0.25  # cores of other work, on average, that make a run suspect


class ReportError(Exception):
    """A suite could not run; the message says why."""


# ---------------------------------------------------------------------------------------------
# Building and running
# ---------------------------------------------------------------------------------------------


def ensure_matplotlib() -> None:
    """Makes matplotlib importable, re-running bench/report under Debian's python3 if the
    interpreter found first on PATH (a virtual environment, pyenv) lacks it."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        here = Path(sys.executable).resolve() if sys.executable else None
        if SYSTEM_PYTHON.exists() and here != SYSTEM_PYTHON.resolve() and \
                not os.environ.get("ASYNCOPT_REPORT_REEXEC"):
            os.environ["ASYNCOPT_REPORT_REEXEC"] = "1"
            os.execv(str(SYSTEM_PYTHON), [str(SYSTEM_PYTHON), str(ENTRY)] + sys.argv[1:])
        raise ReportError("matplotlib is missing: install python3-matplotlib (scripts/deps.sh)")


def build(target: str) -> Path:
    """Configures the release preset if its build tree lacks the benchmarks, then builds
    `target` (a no-op when it is up to date). Returns the executable."""
    if not (BUILD_DIR / "CMakeCache.txt").exists() or not (BUILD_DIR / "bench").is_dir():
        run_command(["cmake", "--preset", PRESET])
    run_command(["cmake", "--build", "--preset", PRESET, "--target", target])
    binary = BUILD_DIR / "bench" / target
    if not binary.exists():
        raise ReportError(f"{binary} was not built")
    return binary


def run_command(command: list[str]) -> None:
    print("+ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise ReportError(f"'{' '.join(command)}' failed with exit status {result.returncode}")


def json_output_flags(json_path: Path) -> list[str]:
    """The flags that make a Google Benchmark program write its results as JSON."""
    return ["--benchmark_format=json",
            f"--benchmark_out={json_path}",
            "--benchmark_out_format=json"]


def print_command(binary: Path, command: list[str], flush: bool = False) -> None:
    print("+ " + " ".join(display_path(Path(c)) if c == str(binary) else c for c in command),
          flush=flush)


@dataclasses.dataclass
class MeasuredRun:
    """A benchmark program's run and what other work took from the machine meanwhile."""
    wall: float  # seconds
    own_cpu_seconds: float  # the program's, all its threads
    other_cores: float  # cores other work used, on average
    stderr: str  # what the program wrote there, when it was captured


def run_measured(binary: Path, command: list[str], expect: str,
                 capture_stderr: bool) -> MeasuredRun:
    """Runs a benchmark program (its stdout discarded; its stderr passed through, or
    captured and then written out), telling how long it is expected to take. The CPU time of
    the whole machine during the run, less the program's own (all its threads and its page
    faults), is what other work took from the shared cores."""
    print_command(binary, command)
    print(f"({expect})", flush=True)
    cpu_before = read_cpu_times()["cpu"]
    children_before = os.times()
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if capture_stderr else None, text=True)
    wall = time.monotonic() - start
    children_after = os.times()
    cpu_after = read_cpu_times()["cpu"]
    if capture_stderr:
        sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise ReportError(f"{binary.name} failed with exit status {result.returncode}")
    hz = os.sysconf("SC_CLK_TCK")
    machine_busy = (cpu_after[0] - cpu_before[0]) / hz
    own = (children_after.children_user - children_before.children_user
           + children_after.children_system - children_before.children_system)
    other_cores = max(0.0, machine_busy - own) / wall if wall > 0 else 0.0
    print(f"run took {wall:.0f} s; other work used {other_cores:.2f} cores on average meanwhile")
    if other_cores >= OTHER_WORK_WARNING:
        print(f"WARNING: other work used {other_cores:.2f} cores on average during the run")
    return MeasuredRun(wall, own, other_cores, result.stderr or "")


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def record_run(json_path: Path, run: dict) -> dict:
    """Adds how the run went to the JSON the benchmark wrote, as "asyncopt_run"; returns
    the whole."""
    data = load_json(json_path)
    data["asyncopt_run"] = run
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def load_or_run(args: argparse.Namespace, target: str,
                run_benchmark: Callable[[Path, Path, bool], dict]) -> tuple[Path, dict]:
    """The JSON that --json names, or that of a fresh run: builds `target` and runs it with
    run_benchmark(binary, json_path, quick), which writes build/release/bench/<suite>.json
    (<suite>-quick.json with --quick)."""
    if args.json:
        json_path = Path(args.json)
        return json_path, load_json(json_path)
    binary = build(target)
    suite = target.removeprefix("bench_")
    json_path = BUILD_DIR / "bench" / (f"{suite}-quick.json" if args.quick else f"{suite}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    return json_path, run_benchmark(binary, json_path, args.quick)


def run_interleaved(binary: Path, json_path: Path, settings: dict, quick: bool) -> dict:
    """Runs a Google Benchmark program: settings' `repetitions` of at least `min_time` s each,
    interleaved in random order, JSON into json_path, the load sampled before and during; the
    JSON with the run's facts recorded (see record_run)."""
    before = load_before_run("absolute numbers will be low and spreads wide, ratios are still "
                             "from one run")
    command = [str(binary),
               f"--benchmark_min_time={settings['min_time']}",
               f"--benchmark_repetitions={settings['repetitions']}",
               "--benchmark_enable_random_interleaving=true",
               *json_output_flags(json_path)]
    measured = run_measured(binary, command, settings["expect"], capture_stderr=False)
    return record_run(json_path, {
        "mode": "quick" if quick else "full",
        "cpu_model": cpu_model(),
        "min_time": settings["min_time"],
        "repetitions": settings["repetitions"],
        "wall_seconds": round(measured.wall, 1),
        "idle_before": before.idle,
        "load_before": before.describe(),
        "other_cores_during": round(measured.other_cores, 2),
    })


def is_quick(data: dict) -> bool:
    return data.get("asyncopt_run", {}).get("mode") == "quick"


def output_dir(args: argparse.Namespace, quick: bool) -> Path:
    if args.out:
        return Path(args.out)
    return BUILD_DIR / "bench" / "quick" if quick else RESULTS_DIR


def require_results(points: dict, json_path: Path) -> None:
    if not points:
        raise ReportError(f"{display_path(json_path)} holds no benchmark results")


@dataclasses.dataclass
class Results:
    """What a suite reports on: the JSON, its points, whether it was a quick run, and where
    the results go."""
    data: dict
    points: dict
    quick: bool
    out: Path


def load_results(args: argparse.Namespace, target: str,
                 run_benchmark: Callable[[Path, Path, bool], dict],
                 load_points: Callable[[dict], dict], warn_load: bool = True) -> Results:
    """The suite's results, from --json or a fresh run of `target` (see load_or_run), with
    the points load_points(data) finds in them; raises ReportError when there are none.
    With `warn_load`, a --json file whose run recorded a busy machine prints a warning."""
    json_path, data = load_or_run(args, target, run_benchmark)
    quick = is_quick(data)
    out = output_dir(args, quick)
    points = load_points(data)
    require_results(points, json_path)
    if warn_load and args.json:
        warn_recorded_load(data.get("asyncopt_run", {}))
    return Results(data, points, quick, out)


def iteration_runs(data: dict):
    """The JSON's per-repetition runs (no aggregates), less those that failed."""
    for bench in data.get("benchmarks", []):
        if bench.get("run_type", "iteration") != "iteration" or bench.get("error_occurred"):
            continue
        yield bench


# ---------------------------------------------------------------------------------------------
# The machine's load
# ---------------------------------------------------------------------------------------------


def read_cpu_times() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies per CPU line of /proc/stat ("cpu" is the sum)."""
    times = {}
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if not line.startswith("cpu"):
                continue
            name, *fields = line.split()
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            total = sum(values)
            times[name] = (total - idle, total)
    return times


@dataclasses.dataclass
class LoadSample:
    """How busy each CPU was over a short sampling window."""
    seconds: float
    busy: dict[str, float]  # per CPU, 0..1
    loadavg: str

    @property
    def idle(self) -> bool:
        return all(fraction < LoadSample.IDLE_BELOW for fraction in self.busy.values())

    IDLE_BELOW = 0.10

    def describe(self) -> str:
        cpus = ", ".join(f"{name} {fraction:.0%} busy" for name, fraction in self.busy.items())
        return f"{cpus} over {self.seconds:.1f} s; load average {self.loadavg}"


def sample_load(seconds: float = 1.0) -> LoadSample:
    before = read_cpu_times()
    time.sleep(seconds)
    after = read_cpu_times()
    busy = {}
    for name in sorted((n for n in after if n != "cpu"), key=lambda n: int(n[3:])):
        d_busy = after[name][0] - before[name][0]
        d_total = after[name][1] - before[name][1]
        busy[name] = d_busy / d_total if d_total > 0 else 0.0
    with open("/proc/loadavg", encoding="ascii") as f:
        loadavg = " ".join(f.read().split()[:3])
    return LoadSample(seconds, busy, loadavg)


def load_before_run(consequence: str) -> LoadSample:
    """Samples the load before a run and prints it, with a WARNING and `consequence` when
    the machine was not idle."""
    before = sample_load()
    print(f"load before the run: {before.describe()}")
    if not before.idle:
        print(f"WARNING: the machine was not idle before the run ({before.describe()}); "
              + consequence)
    return before


def warn_recorded_load(run: dict) -> None:
    """The warnings of a run's load again, when reporting from its JSON."""
    if not run.get("idle_before", True):
        print(f"WARNING: the machine was not idle before the run ({run.get('load_before')})")
    if run.get("other_cores_during", 0.0) >= OTHER_WORK_WARNING:
        print(f"WARNING: other work used {run['other_cores_during']:.2f} cores on average "
              "during the run")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


# ---------------------------------------------------------------------------------------------
# Criteria
# ---------------------------------------------------------------------------------------------


def value_text(value: float | None, form: str = "{:.3f}") -> str:
    return "missing" if value is None else form.format(value)


@dataclasses.dataclass
class Check:
    name: str
    value: float | None  # None: the benchmarks it needs are missing
    op: str  # ">=" or "<="
    target: float
    target_text: str

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def line(self) -> str:
        return (f"CHECK {self.name}: {value_text(self.value)} "
                f"(goal {self.op} {self.target_text}) {self.verdict}")


def print_checks(checks: list[Check]) -> bool:
    for check in checks:
        print(check.line())
    failed = sum(not c.passed for c in checks)
    print(f"{len(checks) - failed} of {len(checks)} checks passed")
    return failed == 0


def exit_status(checks: list[Check], quick: bool) -> int:
    """Prints the CHECKs; the exit status they give (always 0 for a --quick run)."""
    passed = print_checks(checks)
    if quick:
        print("note: a --quick run measures too briefly to judge the criteria; its exit status "
              "says only that the suite ran")
        return 0
    return 0 if passed else 1


# ---------------------------------------------------------------------------------------------
# Markdown and plots
# ---------------------------------------------------------------------------------------------


def size_label(n: int) -> str:
    for shift, unit in ((20, "Mi"), (10, "Ki")):
        if n >= (1 << shift) and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def decimal_size_label(n: int) -> str:
    """n as 1e<k> when it is a power of ten from 10 on, else as it is."""
    if n >= 10 and math.log10(n).is_integer():
        return f"1e{int(math.log10(n))}"
    return str(n)


def log_size_axes(ax, sizes: list[int], xlabel: str, title: str) -> None:
    """Log-log axes over message sizes, ticked at `sizes` (labelled as 1e<k>), with a grid
    and the legend of what was plotted."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([decimal_size_label(n) for n in sizes])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def number(value, form: str) -> str:
    return "?" if value is None else form.format(value)


def markdown_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def criteria_table(checks: list[Check]) -> list[str]:
    return markdown_table(["criterion", "value", "goal", "result"],
                          [[c.name, value_text(c.value), f"{c.op} {c.target_text}", c.verdict]
                           for c in checks], ["l", "r", "l", "l"])


def fact_lines(facts: list[tuple[str, str]]) -> list[str]:
    return [f"- {key}: {value}" for key, value in facts]


def machine_text(run: dict, context: dict) -> str:
    return (f"{run.get('cpu_model', '?')}, {context.get('num_cpus', '?')} CPUs at "
            f"{context.get('mhz_per_cpu', '?')} MHz")


def load_before_text(run: dict) -> str:
    return ("idle" if run.get("idle_before") else "NOT idle") + f" ({run.get('load_before', '?')})"


def run_facts(run: dict) -> list[tuple[str, str]]:
    """The facts every run's Markdown ends with: other work and run time."""
    return [("other work during the run", number(run.get("other_cores_during"), "{:.2f}")
             + " cores on average"),
            ("run time", number(run.get("wall_seconds"), "{:.0f}") + " s")]


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {display_path(path)}")


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def pyplot():
    """matplotlib.pyplot with the Agg backend (files only)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# PNG metadata of the benchmarks' plots: no Software entry naming matplotlib's version.
REPRODUCIBLE_PNG = {"Software": None}


def save_figure(fig, path: Path, dpi: int, metadata: dict | None = None) -> None:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata=metadata)
    plt.close(fig)
    print(f"wrote {display_path(path)}")
