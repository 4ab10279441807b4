// The benchmark scenarios. Each runs one implementation and returns a Result.
#pragma once

#include <string>
#include <vector>

#include "harness.h"

namespace bench {

struct Config {
  bool quick = false;
  // Repetitions of each timed case, interleaved across implementations. On a
  // small VM the cross-core cases switch between two speeds every few
  // seconds; many short runs sample both within one run of the benchmark.
  int runs = 11;
  double seconds = 0.3;    // length of each timed run
  int recovery_trials = 40;
  double recovery_wait_s = 0.2;  // how long the waiter waits before the holder is killed
  int growth_names = 1'000'000;
  int scale_names = 1'000'000;
  int scale_procs = 64;
};

// Timed scenarios: every implementation in `impls`, repetitions interleaved
// (each repetition runs each implementation once), one Result each.
std::vector<Result> uncontended(const std::vector<std::string>& impls, const Config& cfg);
std::vector<Result> uncontended_shared(const std::vector<std::string>& impls, const Config& cfg);
std::vector<Result> contended(const std::vector<std::string>& impls, const Config& cfg);
std::vector<Result> handoff(const std::vector<std::string>& impls, const Config& cfg);
std::vector<Result> spread(const std::vector<std::string>& impls, int procs, const Config& cfg);
std::vector<Result> readers(const std::vector<std::string>& impls, int procs, const Config& cfg);
// cfg.scale_procs processes locking cfg.scale_names names at random.
std::vector<Result> scale(const std::vector<std::string>& impls, const Config& cfg);
Result recovery(const std::string& impl, const Config& cfg);
// Name lookup: locktable (LMDB) against opening a lock file by name (flock).
std::vector<Result> lookup(const std::string& impl, const Config& cfg);
// A locker's throughput alone, and while another process allocates names.
std::vector<Result> growth(const Config& cfg);

}  // namespace bench
