#include "scenarios.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include <fmt/format.h>

#include "locktable/locktable.h"

namespace bench {

namespace {

constexpr int kBatch = 256;  // operations between two looks at the stop flag

// Each process locks and unlocks its own lock (`own`) or lock 0, in batches.
Body loop_on(LockImpl** self, bool own, bool shared) {
  return [self, own, shared](int rank, Control& c) {
    LockImpl& impl = **self;
    int i = own ? rank : 0;
    uint64_t n = 0;
    while (!c.stop.load(std::memory_order_relaxed)) {
      for (int k = 0; k < kBatch; ++k) {
        if (shared) {
          impl.lock_shared(i);
          impl.unlock_shared(i);
        } else {
          impl.lock(i);
          impl.unlock(i);
        }
      }
      n += kBatch;
    }
    c.ops[rank] = n;
  };
}

// The harness runs bodies in children after attach(); bodies reach the
// attached implementation through this pointer (set before each fork).
thread_local LockImpl* current = nullptr;

// Fills in the median, range and run count of the per-run ns/op in `ns`, or
// `empty_note` when no run completed an operation.
Result summarize(Result r, const std::vector<double>& ns, const char* empty_note) {
  if (ns.empty()) {
    if (r.note.empty()) r.note = empty_note;
    return r;
  }
  r.ns_per_op = median(ns);
  r.min = *std::min_element(ns.begin(), ns.end());
  r.max = *std::max_element(ns.begin(), ns.end());
  r.runs = int(ns.size());
  return r;
}

// One implementation's part in an interleaved scenario.
struct Contender {
  std::string name;
  std::unique_ptr<LockImpl> impl;
  std::unique_ptr<Scratch> dir;
  std::vector<double> ns, top_share;
  std::vector<double> rss_mb, pss_mb;  // per run: the median process's, when the body reports them
  std::string note;                    // set: skipped (no shared mode) or failed
};

// How an interleaved scenario sets its implementations up.
struct Setup {
  int locks = 0;           // 0: one per process
  bool inherited = false;  // open the locks once in the parent; the workers inherit them
  Body prepare;            // in each worker before the clock starts
};

// Runs `body` in `procs` processes for every implementation, cfg.runs times,
// interleaved: each repetition runs every implementation once, starting one
// further along the list each time (ABC BCA CAB ...), so a slow stretch of
// the machine (another tenant, a frequency change) falls on all of them
// instead of on one implementation's block of runs. `before_run` resets
// per-run shared state.
std::vector<Result> interleaved(const std::string& scenario, const std::vector<std::string>& impls, int procs,
                                bool shared, bool report_share, const Body& body, const std::function<void()>& before_run,
                                const char* empty_note, const Config& cfg, Setup setup = {}) {
  std::vector<Contender> cs;
  const int locks = setup.locks > 0 ? setup.locks : std::max(procs, 1);
  for (const std::string& name : impls) {
    Contender c{name, make_impl(name), nullptr, {}, {}, {}, {}, {}};
    if (shared && !c.impl->has_shared()) {
      c.note = "no shared mode";
    } else {
      c.dir = std::make_unique<Scratch>();
      if (setup.inherited) {
        c.impl->setup_inherited(c.dir->path(), locks);
      } else {
        c.impl->setup(c.dir->path(), locks);
      }
    }
    cs.push_back(std::move(c));
  }
  const size_t n = cs.size();
  for (int run = 0; run < cfg.runs; ++run) {
    for (size_t k = 0; k < n; ++k) {
      Contender& c = cs[(k + size_t(run)) % n];
      if (!c.note.empty()) continue;
      current = c.impl.get();
      if (before_run) before_run();
      double elapsed = 0;
      uint64_t ops = run_timed(*c.impl, procs, cfg.seconds, setup.prepare, body, &elapsed, setup.inherited);
      if (control()->failures.load() != 0) {
        c.note = "a worker failed";
        continue;
      }
      if (ops == 0) continue;
      c.ns.push_back(elapsed * 1e9 / double(ops));
      uint64_t top = 0;
      for (int p = 0; p < procs; ++p) top = std::max<uint64_t>(top, control()->ops[p].load());
      c.top_share.push_back(100.0 * double(top) / double(ops));
      std::vector<double> rss, pss;
      for (int p = 0; p < procs; ++p) {
        if (control()->rss_kb[p].load() == 0) continue;
        rss.push_back(double(control()->rss_kb[p].load()) / 1024);
        pss.push_back(double(control()->pss_kb[p].load()) / 1024);
      }
      if (!rss.empty()) {
        c.rss_mb.push_back(median(rss));
        c.pss_mb.push_back(median(pss));
      }
    }
  }
  std::vector<Result> out;
  for (Contender& c : cs) {
    Result r{scenario, c.name};
    r.note = c.note;
    if (report_share && r.note.empty() && !c.top_share.empty()) {  // how evenly the processes got the lock
      r.note = fmt::format("busiest process got {:.0f}% of the acquisitions", median(c.top_share));
    }
    if (r.note.empty() && !c.rss_mb.empty()) {
      r.rss_mb = median(c.rss_mb);
      r.pss_mb = median(c.pss_mb);
      r.note = fmt::format("per process: resident {:.1f} MB, proportional share {:.1f} MB", *r.rss_mb, *r.pss_mb);
    }
    out.push_back(summarize(std::move(r), c.ns, empty_note));
  }
  return out;
}

std::vector<Result> timed_loop(const std::string& scenario, const std::vector<std::string>& impls, int procs,
                               bool own, bool shared, const Config& cfg) {
  return interleaved(scenario, impls, procs, shared, !own, loop_on(&current, own, shared), nullptr,
                     "no operation completed", cfg);
}

}  // namespace

std::vector<Result> uncontended(const std::vector<std::string>& impls, const Config& cfg) {
  return timed_loop("uncontended", impls, 1, true, false, cfg);
}

std::vector<Result> uncontended_shared(const std::vector<std::string>& impls, const Config& cfg) {
  return timed_loop("uncontended_shared", impls, 1, true, true, cfg);
}

std::vector<Result> contended(const std::vector<std::string>& impls, const Config& cfg) {
  return timed_loop("contended_2proc", impls, 2, false, false, cfg);
}

std::vector<Result> spread(const std::vector<std::string>& impls, int procs, const Config& cfg) {
  return timed_loop("spread_" + std::to_string(procs) + "proc", impls, procs, true, false, cfg);
}

std::vector<Result> readers(const std::vector<std::string>& impls, int procs, const Config& cfg) {
  return timed_loop("readers_" + std::to_string(procs) + "proc", impls, procs, false, true, cfg);
}

std::vector<Result> scale(const std::vector<std::string>& impls, const Config& cfg) {
  // A program that names many locks and forks its workers: each worker locks
  // and unlocks names chosen at random (xorshift, seeded by rank). The locks
  // are opened once in the parent; the workers inherit them.
  static int names = 0;
  names = cfg.scale_names;
  auto body = [](int rank, Control& c) {
    uint64_t x = 0x9E3779B97F4A7C15ull * uint64_t(rank + 1);
    uint64_t n = 0;
    while (!c.stop.load(std::memory_order_relaxed)) {
      for (int k = 0; k < kBatch; ++k) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const int i = int(x % uint64_t(names));
        current->lock(i);
        current->unlock(i);
      }
      n += kBatch;
    }
    c.ops[rank] = n;
    uint64_t rss = 0, pss = 0;
    if (memory_kb(&rss, &pss)) {
      c.rss_kb[rank] = rss;
      c.pss_kb[rank] = pss;
    }
  };
  Setup setup;
  setup.locks = cfg.scale_names;
  setup.inherited = true;
  // A long-running worker has touched its locks' pages long ago: take and
  // release every lock once before the clock starts, so that page faults (a
  // fork copies no page-table entries of a shared mapping) stay out of it.
  setup.prepare = [](int, Control&) {
    for (int i = 0; i < names; ++i) {
      current->lock(i);
      current->unlock(i);
    }
  };
  return interleaved(fmt::format("scale_{}names_{}proc", cfg.scale_names, cfg.scale_procs), impls, cfg.scale_procs,
                     false, false, body, nullptr, "no operation completed", cfg, setup);
}

std::vector<Result> handoff(const std::vector<std::string>& impls, const Config& cfg) {
  // Strict ping-pong through one lock: a shared `turn` (read and written only
  // under the lock) says whose hand-off it is. A process that takes the lock on
  // its turn passes the turn on; every hand-off moves the lock from one process
  // to the other. A process finding it is not its turn just lets go again.
  struct Turn {
    volatile int turn = 0;
    volatile uint64_t handoffs = 0;
  };
  static Turn* turn = [] {
    void* p = ::mmap(nullptr, sizeof(Turn), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return new (p) Turn();
  }();
  auto body = [](int rank, Control& c) {
    uint64_t n = 0;
    while (!c.stop.load(std::memory_order_relaxed)) {
      current->lock(0);
      if (turn->turn == rank) {
        turn->turn = 1 - rank;
        turn->handoffs = turn->handoffs + 1;
        ++n;
      }
      current->unlock(0);
    }
    c.ops[rank] = n;
  };
  auto before = [] {
    turn->turn = 0;
    turn->handoffs = 0;
  };
  return interleaved("handoff_2proc", impls, 2, false, false, body, before, "no hand-off completed", cfg);
}

Result recovery(const std::string& impl_name, const Config& cfg) {
  Result r{"recovery", impl_name};
  std::unique_ptr<LockImpl> impl = make_impl(impl_name);
  Scratch dir;
  impl->setup(dir.path(), 1);
  Control* c = control();
  std::vector<double> latency_ms, cpu_pct;
  int trials = impl->recovers() ? cfg.recovery_trials : 1;
  for (int t = 0; t < trials; ++t) {
    reset(c);
    std::fflush(nullptr);
    pid_t holder = ::fork();
    if (holder == 0) {
      impl->attach();
      impl->lock(0);
      c->ready = 1;
      ::pause();
      std::_Exit(0);
    }
    while (c->ready.load() < 1) std::this_thread::sleep_for(std::chrono::microseconds(100));
    pid_t waiter = ::fork();
    if (waiter == 0) {
      impl->attach();
      c->ready = 2;
      int64_t cpu0 = cpu_ns_self(), t0 = monotonic_ns();
      impl->lock(0);
      int64_t t1 = monotonic_ns();
      c->stamp_ns[1] = t1;
      c->cpu_ns = cpu_ns_self() - cpu0;
      c->stamp_ns[2] = t1 - t0;
      impl->unlock(0);
      std::_Exit(0);
    }
    while (c->ready.load() < 2) std::this_thread::sleep_for(std::chrono::microseconds(100));
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.recovery_wait_s));  // the waiter blocks
    c->stamp_ns[0] = monotonic_ns();
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
    int status = 0;
    bool done = false;
    for (int i = 0; i < 1000 && !done; ++i) {  // up to 1 s
      done = ::waitpid(waiter, &status, WNOHANG) == waiter;
      if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!done) {
      ::kill(waiter, SIGKILL);
      ::waitpid(waiter, nullptr, 0);
      r.recovered = false;
      r.note = "never: a dead holder's lock stays locked";
      r.runs = t + 1;
      return r;
    }
    latency_ms.push_back(double(c->stamp_ns[1] - c->stamp_ns[0]) / 1e6);
    cpu_pct.push_back(100.0 * double(c->cpu_ns) / double(c->stamp_ns[2]));
  }
  r.ms_median = median(latency_ms);
  r.ms_p99 = percentile(latency_ms, 0.99);
  r.min = *std::min_element(latency_ms.begin(), latency_ms.end());
  r.max = *std::max_element(latency_ms.begin(), latency_ms.end());
  r.cpu_pct = median(cpu_pct);
  r.runs = trials;
  return r;
}

std::vector<Result> lookup(const std::string& impl_name, const Config& cfg) {
  const int n = cfg.quick ? 2000 : 10000;
  std::vector<Result> out;
  Scratch dir;
  auto per_op = [](int64_t t0, int count) { return double(monotonic_ns() - t0) / count; };
  Result existing{"lookup_existing", impl_name}, create{"lookup_create", impl_name};
  if (impl_name == "locktable") {
    using namespace locktable;
    std::unique_ptr<Table> t;
    Options o;
    o.history = HistoryLevel::off;
    if (!Table::open(dir.path() + "/t", o, &t).ok()) return out;
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) names.push_back("name-" + std::to_string(i));
    std::vector<Lock> ls;
    if (!t->lookup(names, &ls).ok()) return out;
    int64_t t0 = monotonic_ns();
    for (const std::string& name : names) {
      Lock l;
      (void)t->lookup(name, &l, Lookup::existing);
    }
    existing.ns_per_op = per_op(t0, n);
    const int m = cfg.quick ? 200 : 1000;
    t0 = monotonic_ns();
    for (int i = 0; i < m; ++i) {
      Lock l;
      (void)t->lookup("new-" + std::to_string(i), &l);
    }
    create.ns_per_op = per_op(t0, m);
    Result batch{"lookup_create_batch", impl_name};
    names.clear();
    for (int i = 0; i < n; ++i) names.push_back("batch-" + std::to_string(i));
    t0 = monotonic_ns();
    (void)t->lookup(names, &ls);
    batch.ns_per_op = per_op(t0, n);
    batch.runs = 1;
    batch.note = "one write transaction for all names";
    existing.runs = create.runs = 1;
    create.note = "one write transaction (and fsync) per name";
    out = {existing, create, batch};
  } else {  // a lock file per name, as flock(1) users do
    std::string base = dir.path() + "/";
    const int m = cfg.quick ? 200 : 1000;
    int64_t t0 = monotonic_ns();
    for (int i = 0; i < m; ++i) {
      int fd = ::open((base + "new-" + std::to_string(i)).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
      ::fsync(fd);
      ::close(fd);
    }
    create.ns_per_op = per_op(t0, m);
    create.note = "open(O_CREAT) + fsync per name";
    t0 = monotonic_ns();
    for (int i = 0; i < n; ++i) {
      int fd = ::open((base + "new-" + std::to_string(i % m)).c_str(), O_RDWR | O_CLOEXEC);
      ::close(fd);
    }
    existing.ns_per_op = per_op(t0, n);
    existing.note = "open + close of the lock file";
    existing.runs = create.runs = 1;
    out = {existing, create};
  }
  return out;
}

std::vector<Result> growth(const Config& cfg) {
  using namespace locktable;
  Scratch dir;
  const std::string path = dir.path() + "/t";
  {
    std::unique_ptr<Table> t;
    Options o;
    o.initial_slots = 8;
    o.history = HistoryLevel::off;
    std::vector<Lock> ls;
    if (!Table::open(path, o, &t).ok() || !t->lookup(std::vector<std::string>{"locker"}, &ls).ok()) return {};
  }
  Control* c = control();
  auto measure = [&](bool allocate, double* allocation_s) {
    reset(c);
    std::fflush(nullptr);
    pid_t locker = ::fork();
    if (locker == 0) {
      std::unique_ptr<Table> t;
      Lock l;
      if (!Table::open(path, {}, &t).ok() || !t->lookup("locker", &l).ok()) std::_Exit(1);
      c->ready.fetch_add(1);
      while (!c->go.load()) std::this_thread::yield();
      int64_t t0 = monotonic_ns();
      uint64_t n = 0;
      while (!c->stop.load(std::memory_order_relaxed)) {
        for (int k = 0; k < kBatch; ++k) {
          (void)l.acquire();
          (void)l.release();
        }
        n += kBatch;
      }
      c->ops[0] = n;
      c->stamp_ns[0] = monotonic_ns() - t0;
      std::_Exit(0);
    }
    while (c->ready.load() < 1) std::this_thread::sleep_for(std::chrono::microseconds(100));
    c->go = true;
    if (allocate) {
      static int round = 0;  // new names each time (counted here, before the fork)
      ++round;
      int64_t t0 = monotonic_ns();
      pid_t alloc = ::fork();
      if (alloc == 0) {
        std::unique_ptr<Table> t;
        if (!Table::open(path, {}, &t).ok()) std::_Exit(1);
        for (int b = 0; b < cfg.growth_names / 1000; ++b) {
          std::vector<std::string> names;
          for (int i = 0; i < 1000; ++i) names.push_back(std::to_string(round) + "-" + std::to_string(b * 1000 + i));
          std::vector<Lock> ls;
          if (!t->lookup(names, &ls).ok()) std::_Exit(2);
        }
        std::_Exit(0);
      }
      int status = 0;
      ::waitpid(alloc, &status, 0);
      *allocation_s = double(monotonic_ns() - t0) / 1e9;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) *allocation_s = -1;  // reported as a failure
    } else {
      std::this_thread::sleep_for(std::chrono::duration<double>(cfg.seconds));
    }
    c->stop = true;
    ::waitpid(locker, nullptr, 0);
    return double(c->stamp_ns[0].load()) / double(std::max<uint64_t>(1, c->ops[0].load()));
  };
  double alloc_s = 0;
  std::vector<double> idle, busy;
  for (int run = 0; run < std::max(1, cfg.runs / 2); ++run) {
    idle.push_back(measure(false, &alloc_s));
    busy.push_back(measure(true, &alloc_s));
  }
  Result a{"growth_idle", "locktable"}, b{"growth_during", "locktable"};
  a.ns_per_op = median(idle);
  a.min = *std::min_element(idle.begin(), idle.end());
  a.max = *std::max_element(idle.begin(), idle.end());
  a.runs = int(idle.size());
  a.note = "one locker alone";
  b.ns_per_op = median(busy);
  b.min = *std::min_element(busy.begin(), busy.end());
  b.max = *std::max_element(busy.begin(), busy.end());
  b.runs = int(busy.size());
  char note[160];
  std::snprintf(note, sizeof note, "the same locker while another process allocates %d names (last run: %.1f s)",
                cfg.growth_names, alloc_s);
  b.note = note;
  if (alloc_s < 0) b.note = "the allocating process failed";
  return {a, b};
}

}  // namespace bench
