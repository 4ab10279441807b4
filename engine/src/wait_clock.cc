#include "wait_clock.h"

#include <algorithm>
#include <chrono>

#include "clock.h"

namespace locktable::detail {

WaitClock::WaitClock(const Deadline& d) : deadline_(d), start_(d.is_now() ? 0 : monotonic_ns()) {
  now_ = start_;
  if (!d.is_never() && !d.is_now()) {
    // Compared before subtracting: a deadline near time_point::min() would
    // wrap around into a wait for ever.
    const auto now = Deadline::clock::now();
    const int64_t left = d.when() > now ? std::chrono::duration_cast<std::chrono::nanoseconds>(d.when() - now).count() : 0;
    end_ = start_ + uint64_t(left);
  }
}

void WaitClock::tick() {
  if (deadline_.is_now()) return;
  now_ = monotonic_ns();
  if (WaitInterrupt* interrupt = deadline_.interrupt(); interrupt != nullptr && !interrupted_ && now_ >= next_ask_) {
    next_ask_ = now_ + kInterruptAskNs;
    interrupted_ = interrupt->requested();
  }
}

bool WaitClock::expired() const {
  return deadline_.is_now() || interrupted_ || (!deadline_.is_never() && now_ >= end_);
}

uint64_t WaitClock::waited_ns() const { return start_ == 0 ? 0 : monotonic_ns() - start_; }

bool WaitClock::check_due(uint64_t who) {
  if (who != watched_) {
    watched_ = who;
    interval_ = kFirstCheckNs;
    next_check_ = now_ + uint64_t(interval_);
    return false;
  }
  if (now_ < next_check_) return false;
  interval_ = std::min(interval_ * 2, kMaxCheckNs);
  next_check_ = now_ + uint64_t(interval_);
  return true;
}

void WaitClock::schedule_walks(uint64_t after_ns) {
  if (after_ns != 0 && start_ != 0 && next_walk_ == 0) next_walk_ = start_ + after_ns;
}

bool WaitClock::walk_due() {
  if (next_walk_ == 0 || now_ < next_walk_) return false;
  next_walk_ = now_ + kWalkIntervalNs;
  return true;
}

int64_t WaitClock::sleep_ns() const {
  uint64_t until = next_check_ > now_ ? next_check_ : now_ + uint64_t(kFirstCheckNs);
  if (next_walk_ != 0 && next_walk_ < until) until = next_walk_ > now_ ? next_walk_ : now_;
  if (!deadline_.is_never() && end_ < until) until = end_;
  if (deadline_.interrupt() != nullptr && until > now_ + uint64_t(kMaxCheckNs)) until = now_ + uint64_t(kMaxCheckNs);
  return until > now_ ? int64_t(until - now_) : 0;
}

}  // namespace locktable::detail
