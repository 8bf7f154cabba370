// The general trainer's plot of the loss curve: scripts/plot_loss.py run by the first python3
// that has matplotlib, without a shell.
#pragma once

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>
#include <vector>

#include "settings.hpp"

namespace examples::train {

/// Runs a program found on PATH (or at a path) with `args`, without a shell; with `quiet`
/// its output goes to /dev/null. Returns its exit status, or -1 when it could not run.
inline int run_program(std::vector<std::string> args, bool quiet) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (quiet) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return -1;
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Plots the CSV loss curve into `png` with scripts/plot_loss.py, using the first python3
/// that has matplotlib: the one on PATH, else Debian's. Never fails the run: when no plot
/// can be made it says why and how to make it later.
inline void plot(const Settings& s, const std::string& title) {
  const std::string later = "the loss curve is in " + s.csv + "; plot it with: python3 " +
                            s.plot_script + " " + s.csv + " -o " + s.plot;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(s.plot_script, ec)) {
    std::printf("no plot: the plotting script %s is missing (--plot-script); %s\n",
                s.plot_script.c_str(), later.c_str());
    return;
  }
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    if (run_program({python, "-c", "import matplotlib"}, true) != 0) {
      continue;
    }
    if (run_program({python, s.plot_script, s.csv, "-o", s.plot, "--title", title}, false) == 0) {
      std::printf("plot in %s\n", s.plot.c_str());
    } else {
      std::printf("no plot: %s %s failed; %s\n", python, s.plot_script.c_str(), later.c_str());
    }
    return;
  }
  std::printf(
      "no plot: no python3 with matplotlib found (Debian: apt-get install python3-matplotlib); "
      "%s\n",
      later.c_str());
}

}  // namespace examples::train
