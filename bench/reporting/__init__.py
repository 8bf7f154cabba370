"""Runs asyncopt's benchmark suites and reports them against their criteria.

usage: bench/report SUITE [options]

Suites:
  kernels      the dense update kernels against a STREAM triad, Eigen and two-pass momentum
  scaling      the sparse Hogwild! path with 1 and 2 workers against hand-written loops
  zmq          the ZeroMQ parameter server on loopback against a raw DEALER/ROUTER echo
  mpi          one synchronous round over MPI against a raw MPI_Allreduce loop (2 and 4 processes)
  cuda         every rule's device kernel against a device-to-device copy kernel (needs a GPU)
  compression  the compression codecs' encode + decode against a memory copy
  experiments  the programs under bench/experiments/, each reproducing a published claim

Each suite builds its benchmark with the `release` preset (configuring it first when
needed), runs it with JSON output, prints one line per criterion,

  CHECK <name>: <value> (goal <op> <target>) PASS|FAIL

and writes its results under docs/results/. The exit status is 0 when every CHECK passes,
1 when one fails, 2 when the suite could not run.

The package holds one module per suite (kernels, scaling, zmq, mpi, cuda, compression,
experiments), each with its DESCRIPTION and report(args) -> exit status; common has what they
share and cli the command line. bench/report is the script that runs it.
"""
