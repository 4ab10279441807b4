// A fork-based harness: run a body in N real processes for a fixed time, and
// the result records the benchmark prints.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "impls.h"

namespace bench {

// Shared between the parent and its worker processes (MAP_SHARED).
struct Control {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops[64] = {};
  std::atomic<int64_t> stamp_ns[4] = {};  // scenario-specific timestamps
  std::atomic<int64_t> cpu_ns{0};
  std::atomic<int> failures{0};
  std::atomic<uint64_t> rss_kb[64] = {};  // scenario-specific: each process's memory at the end
  std::atomic<uint64_t> pss_kb[64] = {};
};

// This process's resident and proportional set sizes (kB), from
// /proc/self/smaps_rollup; false if it cannot be read.
bool memory_kb(uint64_t* rss, uint64_t* pss);

int64_t monotonic_ns();
int64_t cpu_ns_self();

// Creates a fresh Control in shared memory (reused across runs).
Control* control();
void reset(Control* c);

// A temporary folder, removed on destruction.
class Scratch {
 public:
  Scratch();
  ~Scratch();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs body(rank) in `procs` processes, each after impl.attach() and
// prepare(rank). All start together; they stop `seconds` later. Returns total
// operations (each body adds to control()->ops[rank]) and sets *elapsed_s.
using Body = std::function<void(int rank, Control& c)>;
uint64_t run_timed(LockImpl& impl, int procs, double seconds, const Body& prepare, const Body& body,
                   double* elapsed_s, bool inherited = false);

struct Result {
  Result(std::string s, std::string i) : scenario(std::move(s)), impl(std::move(i)) {}
  std::string scenario;
  std::string impl;
  // Timed scenarios: ns per operation (median over runs) and the spread.
  std::optional<double> ns_per_op, min, max;
  // Recovery: latency of the takeover and the waiter's CPU while waiting.
  std::optional<double> ms_median, ms_p99, cpu_pct;
  // Scale: the median worker's resident and proportional memory.
  std::optional<double> rss_mb, pss_mb;
  bool recovered = true;
  int runs = 0;
  std::string note;
};

double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);

}  // namespace bench
