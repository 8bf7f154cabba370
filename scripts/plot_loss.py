#!/usr/bin/env python3
"""Plots loss curves written by examples/train (or train_fashion_mnist) into a PNG.

Each CSV has the columns epoch, seconds, loss, then optionally an accuracy column
(train_accuracy, test_accuracy), updates_per_second and mean_staleness. The loss is drawn
against training time; an accuracy column, when present, is drawn on a second axis. Several
CSV files go on one figure, labelled by their file names, to compare runs.

    python3 scripts/plot_loss.py train_loss.csv -o loss.png
    python3 scripts/plot_loss.py sgd.csv adam.csv -o compare.png --title "rcv1-like"

Exit status: 0 on success, 1 on a bad CSV file, 3 when matplotlib is missing.
"""

import argparse
import csv
import os
import sys


def read_curve(path):
    """Returns (columns, rows) of a CSV loss curve, rows as lists of floats."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise ValueError(f"{path} is empty") from None
        for required in ("seconds", "loss"):
            if required not in header:
                raise ValueError(f"{path}: no '{required}' column in the header {header}")
        rows = []
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path} line {number}: {len(row)} fields, the header has {len(header)}")
            try:
                rows.append([float(field) for field in row])
            except ValueError:
                raise ValueError(f"{path} line {number}: a field is not a number: {row}") from None
    if not rows:
        raise ValueError(f"{path} holds no row")
    return header, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", help="loss curves written by examples/train")
    parser.add_argument("-o", "--output", required=True, help="the PNG file to write")
    parser.add_argument("--title", default="", help="the figure's title")
    parser.add_argument("--log", action="store_true", help="logarithmic loss axis")
    args = parser.parse_args()

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_loss.py: matplotlib is missing (Debian: apt-get install python3-matplotlib)",
              file=sys.stderr)
        return 3

    try:
        curves = [(path, *read_curve(path)) for path in args.csv]
    except (OSError, ValueError) as error:
        print(f"plot_loss.py: {error}", file=sys.stderr)
        return 1

    figure, loss_axis = plt.subplots(figsize=(8, 5))
    accuracy_axis = None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (path, header, rows) in enumerate(curves):
        color = colors[k % len(colors)]
        label = os.path.splitext(os.path.basename(path))[0] if len(curves) > 1 else "training loss"
        seconds = [row[header.index("seconds")] for row in rows]
        loss = [row[header.index("loss")] for row in rows]
        loss_axis.plot(seconds, loss, marker="o", markersize=3, color=color, label=label)
        accuracy = [name for name in header if name.endswith("accuracy")]
        if accuracy:
            if accuracy_axis is None:
                accuracy_axis = loss_axis.twinx()
                accuracy_axis.set_ylabel(accuracy[0].replace("_", " "))
            values = [row[header.index(accuracy[0])] for row in rows]
            # One run: the accuracy in a colour of its own; several: each run's colour.
            accuracy_color = colors[1] if len(curves) == 1 else color
            accuracy_axis.plot(seconds, values, linestyle="--", color=accuracy_color,
                               label=(label + " " if len(curves) > 1 else "")
                               + accuracy[0].replace("_", " "))
    loss_axis.set_xlabel("training time (s)")
    loss_axis.set_ylabel("training loss")
    if args.log:
        loss_axis.set_yscale("log")
    loss_axis.grid(True, alpha=0.3)
    handles, labels = loss_axis.get_legend_handles_labels()
    if accuracy_axis is not None:
        more_handles, more_labels = accuracy_axis.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    loss_axis.legend(handles, labels, loc="center right")
    if args.title:
        loss_axis.set_title(args.title)
    figure.tight_layout()
    try:
        figure.savefig(args.output, dpi=100)
    except OSError as error:
        print(f"plot_loss.py: cannot write {args.output}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
