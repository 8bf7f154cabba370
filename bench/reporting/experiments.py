"""experiments: the programs under bench/experiments/, each reproducing a published claim;
they print their own CHECK lines and write a CSV, which the report plots."""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

from .common import (BUILD_DIR, RESULTS_DIR, ROOT, ReportError, build, display_path,
                     ensure_matplotlib, pyplot, save_figure)

DESCRIPTION = "the experiments under bench/experiments/, each reproducing a published claim"


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def e1_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    taus = [int(r["tau"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fine = [t / 10.0 for t in range(0, 321)]
    ax.plot(fine, [2.0 * math.sin(math.pi / (4.0 * t + 2.0)) for t in fine], color="black",
            label="2 sin(pi / (4 tau + 2))  (Levin and May 1976)")
    ax.plot(taus, [float(r["measured"]) for r in rows], "o", color="tab:red",
            label="bisected in the simulator")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("delay tau (updates)")
    ax.set_ylabel("largest stable lr * h")
    ax.set_title("E1: gradient descent with a fixed delay")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e2_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    cap = 0.6  # diverged (inf) and very poor runs are drawn at the cap

    def series(delay, tau, method, lam=None):
        mine = [r for r in rows if r["delay"] == delay and int(r["tau"]) == tau
                and r["method"] == method and (lam is None or float(r["lambda"]) == lam)]
        return ([float(r["lr"]) for r in mine],
                [min(float(r["final_loss"]), cap) for r in mine])

    def best(delay, tau, methods):
        mine = [r for r in rows if r["delay"] == delay and int(r["tau"]) == tau
                and r["method"] in methods]
        return min(mine, key=lambda r: float(r["final_loss"])) if mine else None

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    sgd = best("fixed", 0, {"asgd"})
    asgd16 = best("fixed", 16, {"asgd"})
    left.plot(*series("fixed", 0, "asgd"), "o-", color="black", label="SGD (tau = 0)")
    left.plot(*series("fixed", 16, "asgd"), "o-", color="tab:red", label="ASGD")
    left.plot(*series("fixed", 16, "staleness_aware"), "s--", color="tab:green",
              label="staleness-aware")
    for method, name, color in (("dc", "DC-ASGD, lambda", "tab:blue"),
                                ("dc_adaptive", "DC-ASGD-a, lambda0", "tab:purple")):
        top = best("fixed", 16, {method})
        if top is not None:
            lam = float(top["lambda"])
            left.plot(*series("fixed", 16, method, lam), "^-", color=color,
                      label=f"{name} {lam:g} (its best)")
    goal = float(asgd16["final_loss"]) - 0.25 * (float(asgd16["final_loss"]) -
                                                 float(sgd["final_loss"]))
    left.axhline(goal, color="gray", linestyle=":", label="goal: 25% of the gap closed")
    left.set_xscale("log", base=2)
    left.set_ylim(0.32, cap * 1.01)
    left.set_xlabel("learning rate")
    left.set_ylabel(f"final training loss (capped at {cap:g})")
    left.set_title("fixed delay tau = 16, learning-rate sweeps")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, loc="lower left")

    settings = [("fixed", 0, "tau = 0"), ("fixed", 4, "tau = 4"), ("fixed", 16, "tau = 16"),
                ("uniform", 16, "uniform 0..32"), ("geometric", 16, "geometric\nmean 16")]
    methods = [({"asgd"}, "ASGD", "tab:red"),
               ({"staleness_aware"}, "staleness-aware", "tab:green"),
               ({"dc", "dc_adaptive"}, "best DC-ASGD", "tab:blue")]
    width = 0.27
    for j, (names, label, color) in enumerate(methods):
        xs, ys = [], []
        for i, (delay, tau, _) in enumerate(settings):
            b = best(delay, tau, names)
            if b is not None and math.isfinite(float(b["final_loss"])):
                xs.append(i + (j - 1) * width)
                ys.append(float(b["final_loss"]))
        right.bar(xs, ys, width, color=color, label=label)
    right.axhline(float(sgd["final_loss"]), color="black", linestyle="--", linewidth=1,
                  label="SGD (tau = 0)")
    right.set_xticks(range(len(settings)), [s[2] for s in settings])
    right.set_ylim(0.3, None)
    right.set_ylabel("best final training loss (tuned lr)")
    right.set_title("best over the learning-rate grid")
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle("E2: delay compensation, logistic regression, Fashion-MNIST shirt vs T-shirt")
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e2b_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    cap = 1.0  # diverged runs are drawn at the cap
    last = max(int(r["epoch"]) for r in rows)
    final = [r for r in rows if int(r["epoch"]) == last]

    def series(delay, workers, method):
        mine = [r for r in final if r["delay"] == delay and int(r["workers"]) == workers
                and r["method"] == method]
        mine.sort(key=lambda r: float(r["lr"]))
        return ([float(r["lr"]) for r in mine],
                [min(float(r["loss"]), cap) for r in mine])

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4), sharey=True)
    for ax, delay in zip(axes, ("round robin", "geometric")):
        ax.plot(*series("none", 1, "sgd"), "o-", color="black", label="sequential SGD")
        for method, name, color, marker in (("asgd", "ASGD", "tab:red", "o"),
                                            ("dc", "DC-ASGD-c (lambda 0.04)", "tab:blue", "^"),
                                            ("dc_adaptive", "DC-ASGD-a (lambda0 2)",
                                             "tab:purple", "s")):
            ax.plot(*series(delay, 8, method), marker + "--", color=color, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate (sequential SGD's best: the rightmost asynchronous point)")
        ax.set_title(f"M = 8 workers, {delay} delays (mean 7)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"final training loss (diverged: drawn at {cap:g})")
    axes[0].legend(fontsize=8)
    fig.suptitle("E2b: MLP on normalised Fashion-MNIST, batch 128, 5 epochs, mean of 3 seeds")
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e3_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    bounds = ["0", "1", "4", "inf"]
    position = {s: k for k, s in enumerate(bounds)}
    kinds = [("simulator", "simulator (checked)"), ("threads", "threads (context)")]
    panels = [("iterations_to_target", "updates to the target loss"),
              ("seconds_to_target", "seconds to the target loss"),
              ("wait_seconds", "waiting at the gate, both workers (s)")]
    styles = {"source": ("tab:red", "o", "split by source"),
              "random": ("tab:blue", "s", "split at random (control)")}

    def panel(ax, kind, column):
        for split, (color, marker, name) in styles.items():
            mine = [r for r in rows if r["split"] == split and r["kind"] == kind]
            if not mine:
                continue
            offset = -0.08 if split == "source" else 0.08
            ax.plot([position[r["s"]] + offset for r in mine], [float(r[column]) for r in mine],
                    marker, color=color, alpha=0.35, markersize=4)
            medians = [statistics.median(float(r[column]) for r in mine if r["s"] == s)
                       for s in bounds]
            ax.plot([k + offset for k in range(len(bounds))], medians, marker + "-",
                    color=color, label=name)
            missed = [r for r in mine if r["reached"] == "0"]
            if column != "wait_seconds" and missed:
                ax.plot([position[r["s"]] + offset for r in missed],
                        [float(r[column]) for r in missed], "x", color="black")
        ax.set_xticks(range(len(bounds)), ["0", "1", "4", "\u221e"])
        ax.set_xlabel("staleness bound s (clocks)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)

    fig, grid = plt.subplots(2, 3, figsize=(11.0, 7.2))
    for axes, (kind, title) in zip(grid, kinds):
        for ax, (column, ylabel) in zip(axes, panels):
            panel(ax, kind, column)
            ax.set_title(title, fontsize=9)
            ax.set_ylabel(ylabel)
        axes[0].legend(fontsize=8)
    fig.suptitle("E3: SSP, 2 workers, worker 1's every 4th step 1 ms longer "
                 "(lines: medians; dots: runs)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e4_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for workers in sorted({int(r["workers"]) for r in rows}):
        mine = [r for r in rows if int(r["workers"]) == workers]
        momenta = [float(r["momentum"]) for r in mine]
        losses = [min(float(r["final_loss"]), 1e3) for r in mine]
        ax.plot(momenta, losses, "o-", label=f"K = {workers}")
    ax.set_yscale("log")
    ax.set_xlabel("explicit momentum mu")
    ax.set_ylabel("final loss (capped at 1e3)")
    ax.set_title("E4: K round-robin workers (delay K - 1), heavy ball")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e5_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    cap = 0.6
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for period in sorted({int(r["period"]) for r in rows}):
        mine = [r for r in rows if int(r["period"]) == period]
        ax.plot([float(r["learning_rate"]) for r in mine],
                [min(float(r["final_loss"]), cap) for r in mine], "o-", label=f"H = {period}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("base learning rate (step decay / 10 after each third)")
    ax.set_ylabel(f"final training loss (capped at {cap:g})")
    ax.set_title("E5: local SGD, 4 workers, equal gradient budget")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e6_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    best: dict[str, dict[str, str]] = {}
    for row in rows:
        stage = row["stage"]
        if stage not in best or float(row["final_loss"]) < float(best[stage]["final_loss"]):
            best[stage] = row
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for stage, row in best.items():
        fraction = float(row["bytes"]) / float(row["uncompressed_bytes"])
        accuracy = float(row["test_accuracy"])
        marker = "o" if "error feedback" in stage else ("D" if "DIANA" in stage else "x")
        ax.scatter([fraction], [accuracy], marker=marker, s=50)
        ax.annotate(stage, (fraction, accuracy), textcoords="offset points", xytext=(6, 4),
                    fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent / bytes uncompressed (log)")
    ax.set_ylabel("test accuracy (best learning rate by final training loss)")
    ax.set_title("E6: Fashion-MNIST softmax, 4 workers in synchronous rounds")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e6b_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    similarities = sorted({float(r["similarity"]) for r in rows})
    fig, axes = plt.subplots(1, len(similarities), figsize=(11, 3.8), sharey=True)
    for ax, similarity in zip(axes, similarities):
        for method in ("local SGD", "SCAFFOLD"):
            runs: dict[str, list[dict[str, str]]] = {}
            for r in rows:
                if float(r["similarity"]) == similarity and r["method"] == method:
                    runs.setdefault(r["learning_rate"], []).append(r)
            # The learning rate that reached the target in the fewest rounds.
            best = min(runs.values(), key=lambda run: (float(run[-1]["test_accuracy"]) < 0.8,
                                                       int(run[-1]["round"])))
            ax.plot([int(r["round"]) for r in best], [float(r["test_accuracy"]) for r in best],
                    "-", label=f"{method} (lr {float(best[0]['learning_rate']):g})")
        ax.axhline(0.8, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{100 * similarity:.0f}% shuffled")
        ax.set_xlabel("rounds (8 local steps each)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy")
    fig.suptitle("E6b: Fashion-MNIST sorted by label, 4 workers, softmax regression")
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e7_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        runs: dict[tuple[str, str], list[dict[str, str]]] = {}
        for r in rows:
            if r["method"] == method:
                runs.setdefault((r["learning_rate"], r["a"]), []).append(r)
        best = min(runs.values(), key=lambda run: float(run[-1]["loss"]))
        label = f"{method} (lr {float(best[0]['learning_rate']):g}"
        label += f", a {float(best[0]['a']):g})" if float(best[0]["a"]) > 0 else ")"
        ax.plot([float(r["gradient_evaluations_per_example"]) for r in best],
                [float(r["loss"]) for r in best], "o-", markersize=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("gradient evaluations per training example (STORM: two per step)")
    ax.set_ylabel("training loss")
    ax.set_title("E7: MLP on Fashion-MNIST, 4 workers in synchronous rounds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


def e8_plot(csv_path: Path, png_path: Path) -> None:
    plt = pyplot()
    rows = read_rows(csv_path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    floor = 1e-12
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ax.plot([int(r["round"]) for r in mine],
                [max(float(r["suboptimality"]), floor) for r in mine],
                "o-" if method == "GIANT" else "-", markersize=3, label=method)
    ax.axhline(1e-6, color="gray", linestyle=":", linewidth=1)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set_xlabel("rounds (all-reduces of the gradient; GIANT: two per round)")
    ax.set_ylabel("training loss - optimum")
    ax.set_title("E8: logistic regression, 4 workers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path, dpi=110)


# name -> (title, plot function)
EXPERIMENTS = {
    "e1_stability": ("E1 stability boundary under a fixed delay", e1_plot),
    "e2_delay_compensation": ("E2 delay compensation on Fashion-MNIST", e2_plot),
    "e2b_delay_compensation_mlp": ("E2b delay compensation as its paper ran it, on an MLP",
                                   e2b_plot),
    "e3_ssp": ("E3 stale synchronous parallel with a straggler", e3_plot),
    "e4_implicit_momentum": ("E4 implicit momentum against the number of workers", e4_plot),
    "e5_local_sgd": ("E5 local SGD at an equal gradient budget", e5_plot),
    "e6_compression": ("E6 compressed rounds: accuracy against bytes", e6_plot),
    "e6b_scaffold": ("E6b SCAFFOLD against local SGD on label-sorted shards", e6b_plot),
    "e7_storm": ("E7 STORM against SGD and heavy ball on an MLP", e7_plot),
    "e8_giant": ("E8 GIANT against first-order methods in rounds", e8_plot),
}


def report(args: argparse.Namespace) -> int:
    ensure_matplotlib()
    if args.json:
        raise ReportError("experiments have no JSON input; run them")
    out = Path(args.out) if args.out else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    checks_passed = True
    lines: list[str] = []
    for name, (title, plot) in EXPERIMENTS.items():
        binary = build(f"experiment_{name}")
        csv_path = BUILD_DIR / "bench" / f"{name}.csv"
        print(f"== {title} ({display_path(binary)})", flush=True)
        result = subprocess.run([str(binary), str(csv_path)], cwd=ROOT, capture_output=True,
                                text=True)
        sys.stderr.write(result.stderr)
        for line in result.stdout.splitlines():
            if line.startswith(("CHECK ", "FINDING ")):
                lines.append(line)
            else:
                print(line)
        # An experiment prints its criteria as CHECK lines, or (one with no criterion to
        # promise) its comparison as FINDING lines; one that prints neither failed.
        if result.returncode not in (0, 1) or not any(
                line.startswith(("CHECK ", "FINDING ")) for line in result.stdout.splitlines()):
            raise ReportError(f"{binary.name} failed with exit status {result.returncode}")
        checks_passed = checks_passed and result.returncode == 0
        plot(csv_path, out / f"{name}.png")
    print()
    for line in lines:
        print(line)
    checks = [line for line in lines if line.startswith("CHECK ")]
    failed = sum(1 for line in checks if line.rstrip().endswith("FAIL") or " FAIL " in line)
    print(f"{len(checks) - failed} of {len(checks)} checks passed")
    return 0 if checks_passed and failed == 0 else 1
