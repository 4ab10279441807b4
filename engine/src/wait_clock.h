// WaitClock: a waiter's view of time. It turns a Deadline into monotonic
// nanoseconds, reads the clock once per wait iteration, and says when the
// holder being watched is due a liveness check: first kFirstCheckNs after the
// waiter starts watching that holder, then at doubling intervals up to
// kMaxCheckNs, so a dead holder the kernel did not report is found quickly
// without burning CPU.
//
// The deadline's WaitInterrupt, when it has one, is asked in tick(), at most
// every kInterruptAskNs, and no sleep is longer than kMaxCheckNs then: once
// it says stop the clock is expired() and expiry() is Code::interrupted.
//
// Nothing reads the clock for a try (Deadline::now()): a try never waits.
#pragma once

#include <cstdint>

#include "locktable/types.h"

namespace locktable::detail {

inline constexpr int64_t kFirstCheckNs = 1'000'000;   // 1 ms
inline constexpr int64_t kMaxCheckNs = 50'000'000;    // 50 ms
inline constexpr uint64_t kWalkIntervalNs = 50'000'000;  // 50 ms between deadlock walks
inline constexpr uint64_t kInterruptAskNs = 1'000'000;   // 1 ms between WaitInterrupt::requested() calls

class WaitClock {
 public:
  explicit WaitClock(const Deadline& deadline);

  // Reads the clock: once per wait iteration, the rest use that reading.
  // Asks the deadline's WaitInterrupt when one is due.
  void tick();

  bool expired() const;
  // Why expired() is true: Code::timed_out, or Code::interrupted.
  Code expiry() const { return interrupted_ ? Code::interrupted : Code::timed_out; }
  // Time since the clock was made (0 for a try).
  uint64_t waited_ns() const;

  // True when the holder identified by `who` is due a liveness check. A new
  // holder is first checked kFirstCheckNs after watching it begins.
  bool check_due(uint64_t who);

  // Deadlock detection: walks of the waits-for graph are due `after_ns`
  // after the clock was made, then every kWalkIntervalNs (0: never).
  void schedule_walks(uint64_t after_ns);
  bool walk_due();

  // How long to sleep: until the next check, walk or the deadline, whichever
  // comes first (never negative).
  int64_t sleep_ns() const;

 private:
  Deadline deadline_;
  uint64_t start_;
  uint64_t now_ = 0;
  uint64_t end_ = 0;
  uint64_t watched_ = ~uint64_t{0};
  int64_t interval_ = kFirstCheckNs;
  uint64_t next_check_ = 0;
  uint64_t next_walk_ = 0;  // 0: no walks
  uint64_t next_ask_ = 0;   // when the WaitInterrupt is next asked
  bool interrupted_ = false;
};

}  // namespace locktable::detail
