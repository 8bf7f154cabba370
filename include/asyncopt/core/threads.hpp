// The worker threads of the transports whose workers are threads of this process.
#pragma once

#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace asyncopt::store {

/// Pins the calling thread to the `worker`-th CPU (modulo the CPUs this process may use).
/// Linux only; elsewhere, or when the CPUs cannot be read, does nothing.
inline void pin_to_cpu([[maybe_unused]] std::size_t worker) noexcept {
#if defined(__linux__)
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    return;
  }
  const int count = CPU_COUNT(&allowed);
  if (count <= 0) {
    return;
  }
  int wanted = static_cast<int>(worker % static_cast<std::size_t>(count));
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed) && wanted-- == 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
      return;
    }
  }
#endif
}

/// Runs body(worker) repeatedly on one thread per worker until it returns false, each thread
/// pinned to a CPU first when `pin`. The first exception a body throws is rethrown here once
/// every thread has finished.
template <class Body>
void run_threads(std::size_t workers, Body&& body, bool pin = false) {
  std::exception_ptr error;
  std::mutex error_mutex;
  {
    std::vector<std::jthread> threads;
    threads.reserve(workers);
    for (std::size_t id = 0; id < workers; ++id) {
      threads.emplace_back([&body, &error, &error_mutex, id, pin] {
        if (pin) {
          pin_to_cpu(id);
        }
        try {
          while (body(id)) {
          }
        } catch (...) {
          const std::lock_guard lock(error_mutex);
          if (!error) {
            error = std::current_exception();
          }
        }
      });
    }
  }
  if (error) {
    std::rethrow_exception(error);
  }
}

}  // namespace asyncopt::store
