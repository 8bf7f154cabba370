// The command line every experiment program takes: an optional path for its CSV.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string_view>

namespace asyncopt::experiments {

/// Reads the command line `PROGRAM [CSV]`: returns the CSV file opened for writing, or a
/// closed stream when no path was given. `--help` or `-h` prints the usage and exits with 0;
/// another argument starting with '-' or more than one argument prints what is wrong and the
/// usage to stderr, and a path that cannot be written one line, and exits with 2.
inline std::ofstream open_csv(int argc, char** argv) {
  const std::string_view program = argc > 0 ? argv[0] : "experiment";
  const std::string_view name = program.substr(program.find_last_of('/') + 1);
  const auto usage = [&](std::FILE* to) {
    std::fprintf(to,
                 "usage: %.*s [CSV]\nRuns the experiment, prints its CHECK and FINDING lines "
                 "and writes its data to CSV when a path is given.\n",
                 static_cast<int>(name.size()), name.data());
  };
  std::ofstream csv;
  if (argc < 2) {
    return csv;
  }
  const std::string_view argument = argv[1];
  if (argument == "--help" || argument == "-h") {
    usage(stdout);
    std::exit(0);
  }
  if (argc > 2 || argument.starts_with('-')) {
    std::fprintf(stderr, "%.*s: unexpected argument '%s' (the only argument is a CSV path)\n",
                 static_cast<int>(name.size()), name.data(), argc > 2 ? argv[2] : argv[1]);
    usage(stderr);
    std::exit(2);
  }
  csv.open(argv[1]);
  if (!csv.is_open()) {
    std::fprintf(stderr, "%.*s: cannot write the CSV file '%s'\n", static_cast<int>(name.size()),
                 name.data(), argv[1]);
    std::exit(2);
  }
  return csv;
}

}  // namespace asyncopt::experiments
