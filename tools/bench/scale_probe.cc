#include "scale_probe.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"           // LockAccess: the handle's slot pointer
#include "local/atomic128.h"  // cas128: the CAS the lock uses
#include "harness.h"
#include "locktable/locktable.h"

namespace bench {

namespace {

enum class Variant { full, prefetch_both, prefetch_handle, prefetch_slot, bare_via_handle, bare_compact, robust };

struct VariantInfo {
  Variant v;
  const char* what;
};
constexpr VariantInfo kVariants[] = {
    {Variant::full, "acquire+release"},
    {Variant::prefetch_both, "acquire+release, next handle and slot prefetched"},
    {Variant::prefetch_handle, "acquire+release, next handle prefetched"},
    {Variant::prefetch_slot, "acquire+release, next slot prefetched"},
    {Variant::bare_via_handle, "bare 16-byte CAS pair on the slot, through the handle"},
    {Variant::bare_compact, "bare 16-byte CAS pair on the slot, from an array of slot pointers"},
    {Variant::robust, "the peer: pthread robust mutexes in one shared array (lock+unlock)"},
};

// An unchanged record written back: the line is taken for writing as by a
// lock's CAS, and the lock's state does not change.
inline void bare_pair(void* slot) {
  for (int k = 0; k < 2; ++k) {
    locktable::detail::Word128 e = locktable::detail::guess128(slot);
    (void)locktable::detail::cas128(slot, e, e);
  }
}

inline uint64_t next_random(uint64_t x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

// The timed pairs of variant `v`, in worker `rank` (harness.h: run_timed).
void pairs(Variant v, int rank, std::vector<locktable::Lock>& locks, const std::vector<void*>& slots,
           LockImpl& robust, Control& c) {
  const uint64_t n = locks.size();
  uint64_t x = 0x9E3779B97F4A7C15ull * uint64_t(rank + 1), ops = 0;
  while (!c.stop.load(std::memory_order_relaxed)) {
    for (int k = 0; k < 256; ++k) {
      x = next_random(x);
      const uint64_t i = x % n;
      const uint64_t j = next_random(x) % n;  // the next pair's lock
      locktable::Lock& l = locks[i];
      switch (v) {
        case Variant::prefetch_both: __builtin_prefetch(&locks[j]); __builtin_prefetch(slots[j], 1); break;
        case Variant::prefetch_handle: __builtin_prefetch(&locks[j]); break;
        case Variant::prefetch_slot: __builtin_prefetch(slots[j], 1); break;
        default: break;
      }
      if (v == Variant::robust) {
        robust.lock(int(i));
        robust.unlock(int(i));
      } else if (v == Variant::bare_via_handle) {
        bare_pair(locktable::detail::LockAccess::state(l));
      } else if (v == Variant::bare_compact) {
        bare_pair(slots[i]);
      } else if (!l.acquire().held() || !l.release().ok()) {
        c.failures.fetch_add(1);
        return;
      }
    }
    ops += 256;
  }
  c.ops[rank] = ops;
}

// ns per pair over all processes, or a negative number if a worker failed.
// The workers inherit the handles, slot pointers and mutexes (`robust` is
// the implementation run_timed attaches in each).
double run_once(Variant v, int procs, double seconds, std::vector<locktable::Lock>& locks,
                const std::vector<void*>& slots, LockImpl& robust) {
  auto prepare = [&, v](int, Control&) {  // fault every page in before the clock starts
    for (size_t i = 0; i < locks.size(); ++i) {
      if (v == Variant::robust) {
        robust.lock(int(i));
        robust.unlock(int(i));
      } else {
        (void)locks[i].acquire();
        (void)locks[i].release();
      }
    }
  };
  auto body = [&, v](int rank, Control& c) { pairs(v, rank, locks, slots, robust, c); };
  double elapsed = 0;
  const uint64_t ops = run_timed(robust, procs, seconds, prepare, body, &elapsed, /*inherited=*/true);
  if (control()->failures.load() != 0 || ops == 0) return -1;
  return elapsed * 1e9 / double(ops);
}

}  // namespace

int run_scale_probe(int names, int procs, int runs, double seconds) {
  Scratch dir;
  locktable::Options o;
  o.history = locktable::HistoryLevel::off;
  o.initial_slots = uint32_t(std::max(64, std::min(names, 1 << 16)));  // grown, as in the scale scenario
  std::unique_ptr<locktable::Table> table;
  locktable::Status s = locktable::Table::open(dir.path() + "/table", o, &table);
  std::vector<locktable::Lock> locks;
  for (int i = 0; s.ok() && i < names; i += 10'000) {
    std::vector<std::string> batch;
    for (int k = i; k < std::min(names, i + 10'000); ++k) batch.push_back("lock" + std::to_string(k));
    std::vector<locktable::Lock> got;
    s = table->lookup(batch, &got);
    for (locktable::Lock& l : got) locks.push_back(std::move(l));
  }
  if (!s.ok()) {
    fmt::print(stderr, "locktable-bench: --scale-probe: {}\n", s.to_string());
    return 1;
  }
  std::unique_ptr<LockImpl> robust = make_impl("pthread_robust");
  robust->setup_inherited(dir.path(), names);
  std::vector<void*> slots;
  for (const locktable::Lock& l : locks) slots.push_back(locktable::detail::LockAccess::state(l));
  std::vector<std::vector<double>> ns(std::size(kVariants));
  for (int r = 0; r < runs; ++r) {
    for (size_t k = 0; k < std::size(kVariants); ++k) {  // interleaved, as the benchmark's scenarios
      const size_t at = (k + size_t(r)) % std::size(kVariants);
      const double t = run_once(kVariants[at].v, procs, seconds, locks, slots, *robust);
      if (t < 0) {
        fmt::print(stderr, "locktable-bench: --scale-probe: a worker failed\n");
        return 1;
      }
      ns[at].push_back(t);
    }
  }
  fmt::print("scale probe: {} names, {} processes, history off, median of {} runs of {} s (ns per pair)\n", names,
             procs, runs, seconds);
  for (size_t k = 0; k < std::size(kVariants); ++k) fmt::print("  {:>7.1f} ns  {}\n", median(ns[k]), kVariants[k].what);
  return 0;
}

}  // namespace bench
