// Kill torture: worker processes lock, check and release a few named locks
// (one at a time, several at once with acquire_all, and exclusive holds
// downgraded to shared ones) while a killer SIGKILLs them at random moments
// (and workers arm crash points inside joins, leaves, downgrades, creations,
// removals, growth and drains). Invariants:
//
//   1. Never two holders: an exclusive holder finds no marker and no live
//      reader inside; a reader finds no marker unless told abandoned.
//   2. A marker left by a dead holder is only ever found by a holder that
//      was told abandoned, and the marker's pid is dead.
//   3. Every takeover a worker was told about is in the history exactly once
//      (a `recovered` event naming the dead owner), and no dead owner of a
//      lock is recovered twice (an owner is a pid, tid and start time: a
//      long run wraps around the pids).
//   4. Nothing hangs: no acquire waits 20 s, no acquire_all (canonical
//      order) is told deadlock; every worker stops on request.
//   5. After recover(), check() finds no problem.
//
// Usage: locktable-torture [SECONDS [SEED]] [--etcd] (default 60 s; Meson
// passes -Dtorture_seconds). Not a Catch2 test: it is one long scenario that
// prints what it saw.
//
// --etcd: the same workers and invariants on an etcd table, on a
// single-member etcd this run starts on loopback ports (lease TTL 2 s). A
// killed process's keys stay until its lease runs out, so kills come about
// once a second rather than every 15 ms, aimed mostly at workers inside a
// lock; there are no crash points (they are the mapped table's protocol steps).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "crash_point.h"
#include "etcd_process.h"
#include "locktable/locktable.h"
#include "table_format.h"

using namespace locktable;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kWorkers = 6;
constexpr int kLocks = 3;
constexpr int kMaxTakeovers = 1 << 14;
constexpr int kMaxMessages = 16;
// Every event is kept (retention off), about 110 bytes of LMDB each: a 7-minute
// run (19 million events, 2.2 GB) outgrows the default 1 GiB map, and the
// drain then fails with `capacity`. 16 GiB is address space, not disk: the
// file grows as it fills.
constexpr size_t kMapSize = size_t{16} << 30;

// A dead owner is its pid, tid and start time: a long run reuses pids.
struct Takeover {
  uint32_t lock;
  uint32_t dead_pid;
  uint32_t dead_tid;
  uint32_t dead_start;
  uint32_t by_pid;
};

// Lives in a MAP_SHARED anonymous mapping made before the workers fork.
struct Shared {
  std::atomic<uint32_t> stop;
  std::atomic<uint32_t> violations;
  char messages[kMaxMessages][240];
  struct PerLock {
    std::atomic<uint32_t> writer;              // pid of the exclusive holder inside, or 0
    std::atomic<uint32_t> readers[kWorkers];   // pid of the reader inside, per worker index
  } locks[kLocks];
  std::atomic<uint64_t> acquisitions;
  std::atomic<uint64_t> abandoned;
  std::atomic<uint64_t> crash_points;
  std::atomic<uint64_t> creations;
  std::atomic<uint64_t> all_acquisitions;  // acquire_all calls that held
  std::atomic<uint64_t> downgrades;
  std::atomic<uint32_t> takeover_count;
  Takeover takeovers[kMaxTakeovers];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);

Shared* g = nullptr;
bool g_etcd = false;  // --etcd: the table is an etcd:// location
volatile pid_t g_workers[kWorkers];  // for the watchdog: workers must not outlive a hung supervisor

void violation(const char* fmt_text, uint32_t a = 0, uint32_t b = 0, uint32_t c = 0) {
  uint32_t n = g->violations.fetch_add(1);
  if (n < kMaxMessages) {
    std::snprintf(g->messages[n], sizeof g->messages[n], fmt_text, a, b, c);
  }
}

// The same, for a call that failed: names the call's status.
void violation_because(const char* what, const Status& status) {
  uint32_t n = g->violations.fetch_add(1);
  if (n < kMaxMessages) {
    std::snprintf(g->messages[n], sizeof g->messages[n], "%s: %s", what, status.to_string().c_str());
  }
}

// A process is dead once /proc no longer shows it running (gone, or a zombie).
// A SIGKILLed holder's locks are released by the kernel early in its exit, so
// allow it a moment to finish dying.
bool becomes_dead(uint32_t pid, int within_ms = 2000) {
  auto until = Clock::now() + std::chrono::milliseconds(within_ms);
  for (;;) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!stat || !std::getline(stat, line)) return true;
    size_t close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size()) {
      char state = line[close + 2];
      if (state == 'Z' || state == 'X' || state == 'x') return true;
    }
    if (Clock::now() > until) return false;
    usleep(1000);
  }
}

std::string lock_name(int i) { return "torture-" + std::to_string(i); }

const char* const kCrashPoints[] = {
    "join:after_intent",  "join:after_cas",       "leave:after_intent",  "leave:after_cas",
    "leave:before_free",  "create:before_prepare", "create:before_commit", "create:before_link",
    "remove:after_retire", "remove:before_commit", "grow:before_allocate", "grow:after_allocate",
    "grow:after_descriptor", "grow:after_publish", "drain:before_commit", "takeover:after_cas",
    "downgrade:after_intent", "downgrade:after_cas",
};

void spin_for(std::mt19937& rng) {
  // On etcd an acquire or a release takes a millisecond or so: hold about as
  // long, so that kills find holders and not only waiters.
  if (g_etcd) usleep(useconds_t(rng() % 4000));
  uint32_t n = rng() % 2000;
  for (uint32_t i = 0; i < n; ++i) asm volatile("" ::: "memory");
  if (rng() % 16 == 0) sched_yield();
}

int worker(const std::string& dir, int index, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  Options options;
  options.create_if_missing = false;
  options.lmdb_map_size = kMapSize;
  std::unique_ptr<Table> table;
  if (Status s = Table::open(dir, options, &table); !s.ok()) {
    violation_because("worker could not open the table", s);
    return 1;
  }
  std::vector<std::string> names;
  for (int i = 0; i < kLocks; ++i) names.push_back(lock_name(i));
  std::vector<Lock> locks;
  if (!table->lookup(names, &locks).ok()) {
    violation("worker could not look the names up");
    return 1;
  }
  const uint32_t me = uint32_t(getpid());
  uint64_t scratch = 0;

  while (!g->stop.load()) {
    // Now and then die inside a protocol step rather than at a random moment.
    if (!g_etcd && rng() % 40 == 0) {
      detail::arm_crash_point(kCrashPoints[rng() % std::size(kCrashPoints)]);
      g->crash_points.fetch_add(1);
    }
    uint32_t roll = rng() % 100;
    if (roll < 3) {
      // Create and remove a private name: LMDB writes, growth past the
      // initial slots.
      std::string name = "scratch-" + std::to_string(me) + "-" + std::to_string(scratch++ % 24);
      Lock l;
      if (table->lookup(name, &l).ok()) {
        g->creations.fetch_add(1);
        if (rng() % 2 == 0) (void)table->remove(name);
      }
      continue;
    }
    if (roll < 5) {
      (void)table->drain_history();
      continue;
    }

    if (roll < 9) {
      // Several locks at once, exclusive, listed in a random order: the
      // canonical order keeps acquire_all callers (and the single-lock ones)
      // free of cycles, so a deadlock or a timeout is a violation.
      std::vector<int> picked;
      while (picked.size() < 2 + rng() % 2) {
        int li = int(rng() % kLocks);
        if (std::find(picked.begin(), picked.end(), li) == picked.end()) picked.push_back(li);
      }
      std::vector<LockRequest> requests;
      for (int li : picked) requests.push_back(LockRequest{&locks[size_t(li)], Mode::exclusive});
      AcquireAllResult all = table->acquire_all(requests, Deadline::after(std::chrono::seconds(20)));
      if (!all.held()) {
        violation("worker %u: acquire_all failed (code %u)", me, uint32_t(all.status.code()));
        return 1;
      }
      g->acquisitions.fetch_add(picked.size());
      g->all_acquisitions.fetch_add(1);
      g->abandoned.fetch_add(all.abandoned.size());
      for (size_t k = 0; k < all.abandoned.size(); ++k) {
        uint32_t n = g->takeover_count.fetch_add(1);
        if (n >= kMaxTakeovers) break;
        Takeover& t = g->takeovers[n];
        t.lock = uint32_t(picked[all.abandoned[k]]);
        t.dead_pid = all.dead_owners[k].pid;
        t.dead_tid = all.dead_owners[k].tid;
        t.dead_start = all.dead_owners[k].start_time;
        __atomic_store_n(&t.by_pid, me, __ATOMIC_RELEASE);
      }
      for (size_t k = 0; k < picked.size(); ++k) {
        Shared::PerLock& pl = g->locks[picked[k]];
        const bool was_abandoned = std::find(all.abandoned.begin(), all.abandoned.end(), k) != all.abandoned.end();
        uint32_t marker = pl.writer.load();
        if (marker != 0 && !was_abandoned) {
          violation("pid %u found marker %u on lock %u without being told abandoned (acquire_all)", me, marker,
                    uint32_t(picked[k]));
        } else if (marker != 0 && !becomes_dead(marker)) {
          violation("pid %u found live pid %u inside lock %u (acquire_all)", me, marker, uint32_t(picked[k]));
        }
        pl.writer.store(me);
      }
      spin_for(rng);
      for (size_t k = 0; k < picked.size(); ++k) {
        Shared::PerLock& pl = g->locks[picked[k]];
        if (uint32_t now = pl.writer.load(); now != me) {
          violation("pid %u: pid %u entered lock %u too (acquire_all)", me, now, uint32_t(picked[k]));
        }
        pl.writer.store(0);
      }
      for (size_t k : all.abandoned) (void)locks[size_t(picked[k])].mark_consistent();
      if (Status s = table->release_all(requests); !s.ok()) violation("pid %u: release_all failed", me);
      continue;
    }

    int li = int(rng() % kLocks);
    Lock& lock = locks[size_t(li)];
    Shared::PerLock& pl = g->locks[li];
    const bool exclusive = rng() % 4 != 0;
    AcquireResult r = lock.acquire(exclusive ? Mode::exclusive : Mode::shared,
                                   Deadline::after(std::chrono::seconds(20)));
    const bool abandoned = r.status.code() == Code::abandoned;
    if (!r.status.ok() && !abandoned) {
      if (r.status.code() == Code::timed_out) violation("worker %u waited 20 s for lock %u", me, uint32_t(li));
      else violation("worker %u: acquire of lock %u failed (code %u)", me, uint32_t(li), uint32_t(r.status.code()));
      return 1;
    }
    g->acquisitions.fetch_add(1);
    if (abandoned) {
      g->abandoned.fetch_add(1);
      uint32_t n = g->takeover_count.fetch_add(1);
      if (n < kMaxTakeovers) {
        Takeover& t = g->takeovers[n];
        t.lock = uint32_t(li);
        t.dead_pid = r.dead_owner.pid;
        t.dead_tid = r.dead_owner.tid;
        t.dead_start = r.dead_owner.start_time;
        __atomic_store_n(&t.by_pid, me, __ATOMIC_RELEASE);  // last: a worker killed before it wrote this left none
      }
    }

    uint32_t marker = pl.writer.load();
    if (marker != 0) {
      if (!abandoned) violation("pid %u found marker %u on lock %u without being told abandoned", me, marker, uint32_t(li));
      else if (!becomes_dead(marker)) violation("pid %u found live pid %u inside lock %u", me, marker, uint32_t(li));
    }

    if (exclusive) {
      for (int w = 0; w < kWorkers; ++w) {
        uint32_t reader = pl.readers[w].load();
        if (reader != 0 && !becomes_dead(reader)) {
          violation("writer %u found live reader %u inside lock %u", me, reader, uint32_t(li));
        }
      }
      pl.writer.store(me);  // the marker: "a holder is in the middle of its work"
      spin_for(rng);
      if (uint32_t now = pl.writer.load(); now != me) violation("pid %u: pid %u entered lock %u too", me, now, uint32_t(li));
      pl.writer.store(0);  // the repair is done
      if (abandoned) (void)lock.mark_consistent();
      if (rng() % 4 == 0) {
        // Downgrade, then read: no writer may enter until this reader leaves.
        if (Status s = lock.downgrade(); !s.ok()) {
          violation("pid %u: downgrade of lock %u failed (code %u)", me, uint32_t(li), uint32_t(s.code()));
          return 1;
        }
        g->downgrades.fetch_add(1);
        pl.readers[index].store(me);
        spin_for(rng);
        if (uint32_t now = pl.writer.load(); now != 0) violation("downgraded %u: writer %u entered lock %u", me, now, uint32_t(li));
        pl.readers[index].store(0);
        if (Status s = lock.release(Mode::shared); !s.ok()) violation("pid %u: release after downgrade failed", me);
      } else if (Status s = lock.release(); !s.ok()) {
        violation("pid %u: release of lock %u failed", me, uint32_t(li));
      }
    } else {
      pl.readers[index].store(me);
      spin_for(rng);
      if (uint32_t now = pl.writer.load(); now != 0 && now != marker) {
        violation("reader %u: writer %u entered lock %u", me, now, uint32_t(li));
      }
      pl.readers[index].store(0);
      if (Status s = lock.release(Mode::shared); !s.ok()) violation("pid %u: shared release of lock %u failed", me, uint32_t(li));
    }
  }
  return 0;
}

pid_t spawn_worker(const std::string& dir, int index, uint64_t seed) {
  pid_t pid = fork();
  if (pid == 0) _exit(worker(dir, index, seed));
  g_workers[index] = pid;
  return pid;
}

// Checks invariant 3 against the drained history.
void check_takeovers(Table& table) {
  std::vector<Event> events;
  HistoryQuery q;
  q.limit = 0;
  if (Status s = table.history(q, &events); !s.ok()) {
    violation_because("history could not be read", s);
    return;
  }
  // Keyed by the dead owner's start time too, and found for a worker's
  // takeover by pid and tid, and by start time where both know it (0:
  // unknown, types.h, Owner).
  std::map<std::tuple<std::string, uint32_t, uint32_t, uint32_t>, const Event*> recovered;
  std::multimap<std::tuple<std::string, uint32_t, uint32_t>, uint32_t> recovered_starts;
  uint64_t lost = 0;
  for (const Event& e : events) {
    if (e.kind == EventKind::lost) lost += e.count;
    if (e.kind != EventKind::recovered) continue;
    recovered_starts.emplace(std::make_tuple(e.name, e.dead_owner.pid, e.dead_owner.tid), e.dead_owner.start_time);
    auto [it, first] = recovered.emplace(std::make_tuple(e.name, e.dead_owner.pid, e.dead_owner.tid, e.dead_owner.start_time), &e);
    if (!first) {
      const Event& p = *it->second;
      std::printf("recovered twice: %s dead %u/%u: seq %llu (%s, by %u) and seq %llu (%s, by %u)\n", e.name.c_str(),
                  e.dead_owner.pid, e.dead_owner.tid, (unsigned long long)p.seq,
                  p.mode == Mode::shared ? "shared" : "exclusive", p.pid, (unsigned long long)e.seq,
                  e.mode == Mode::shared ? "shared" : "exclusive", e.pid);
      violation("dead owner pid %u tid %u recovered twice", e.dead_owner.pid, e.dead_owner.tid);
    }
  }
  // A takeover a worker reported was recorded before its acquire returned,
  // and workers append far fewer events between two drains than their
  // segments hold, so it can never be among the lost.
  std::printf("history: %llu events counted lost (a segment lapped, or an ownership change late)\n",
              (unsigned long long)lost);
  uint32_t n = std::min<uint32_t>(g->takeover_count.load(), kMaxTakeovers);
  for (uint32_t i = 0; i < n; ++i) {
    const Takeover& t = g->takeovers[i];
    if (__atomic_load_n(&t.by_pid, __ATOMIC_ACQUIRE) == 0) continue;  // its worker was killed while noting it
    auto [from, to] = recovered_starts.equal_range({lock_name(int(t.lock)), t.dead_pid, t.dead_tid});
    bool found = false;
    for (auto it = from; it != to && !found; ++it) found = t.dead_start == 0 || it->second == 0 || it->second == t.dead_start;
    if (!found) {
      if (getenv("TORTURE_DEBUG")) {
        for (const Event& e : events) {
          if (e.name == lock_name(int(t.lock)) && (e.pid == t.dead_pid || e.dead_owner.pid == t.dead_pid || e.abandoned || e.kind == EventKind::recovered))
            std::printf("  seq %llu %s %s pid %u tid %u abandoned %d dead %u/%u start %u mode %d\n", (unsigned long long)e.seq, event_kind_name(e.kind), e.name.c_str(), e.pid, e.tid, e.abandoned, e.dead_owner.pid, e.dead_owner.tid, e.dead_owner.start_time, int(e.mode));
        }
        std::printf("-- missing: lock %u dead %u/%u start %u by %u\n", t.lock, t.dead_pid, t.dead_tid, t.dead_start, t.by_pid);
      }
      violation("takeover of lock %u from pid %u (by %u) missing from history", t.lock, t.dead_pid, t.by_pid);
    }
  }
  std::printf("history: %zu events, %zu distinct dead owners recovered, %u takeovers reported by workers\n",
              events.size(), recovered.size(), n);
}

// TORTURE_DEBUG: after a failed check, the raw state of the locks' slots, of
// every reader record that is claimed or has an op, and each lock's last 40
// events from the history.
void dump_state(const std::string& dir, Table& table) {
  int fd = ::open((dir + "/table").c_str(), O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return;
  void* m = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) return;
  auto* base = static_cast<const char*>(m);
  auto* h = reinterpret_cast<const format::Header*>(base);
  namespace f = locktable::format;
  for (uint32_t k = 0; k < h->extent_count; ++k) {
    const f::ExtentDescriptor& e = h->extents[k];
    auto* slots = reinterpret_cast<const f::Slot*>(base + e.offset);
    if (k == 0) {
      for (int i = 0; i < kLocks; ++i) {
        const f::OwnerRecord& o = slots[i].owner;
        std::printf("slot %d: tid_word %#x pid_word %#x aux %u gen %u dead %u/%u\n", i, o.tid_word, o.pid_word, o.aux,
                    o.generation, slots[i].dead_pid, slots[i].dead_tid);
      }
    }
    auto* readers = reinterpret_cast<const f::ReaderRecord*>(base + e.offset + uint64_t(e.slot_count) * f::kSlotSize);
    for (uint32_t j = 0; j < e.reader_count; ++j) {
      const f::ReaderRecord& r = readers[j];
      uint32_t slot = f::reader_op_slot(r.op);
      if (r.op == 0 && r.ident.pid_word == 0 && r.ident.tid_word == 0) continue;
      std::printf("reader %u: ident tid_word %#x pid_word %#x aux %u gen %u claimer %u op slot %u state %u claim %u\n",
                  e.first_reader + j, r.ident.tid_word, r.ident.pid_word, r.ident.aux, r.ident.generation,
                  r.claimer_tid, slot, uint32_t(f::reader_op_state(r.op)), f::reader_op_claim(r.op));
    }
  }
  munmap(m, size_t(st.st_size));
  std::vector<Event> events;
  HistoryQuery q;
  q.limit = 0;
  if (!table.history(q, &events).ok()) return;
  for (int i = 0; i < kLocks; ++i) {
    std::vector<const Event*> mine;
    for (const Event& e : events) {
      if (e.name == lock_name(i)) mine.push_back(&e);
    }
    std::printf("lock %d: last events\n", i);
    for (size_t j = mine.size() > 40 ? mine.size() - 40 : 0; j < mine.size(); ++j) {
      const Event& e = *mine[j];
      std::printf("  seq %llu %s %s pid %u abandoned %d dead %u\n", (unsigned long long)e.seq, event_kind_name(e.kind),
                  e.mode == Mode::shared ? "shared" : "exclusive", e.pid, e.abandoned, e.dead_owner.pid);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--etcd") == 0) g_etcd = true;
    else positional.push_back(argv[i]);
  }
  const int seconds = positional.size() > 0 ? std::atoi(positional[0].c_str()) : 60;
  const uint64_t seed = positional.size() > 1 ? std::strtoull(positional[1].c_str(), nullptr, 10) : uint64_t(time(nullptr));
  std::printf("locktable-torture: %d s, %d workers, %d locks, seed %llu%s\n", seconds, kWorkers, kLocks,
              (unsigned long long)seed, g_etcd ? ", on etcd" : "");
  // The supervisor itself must not hang either (it drains and recovers too).
  signal(SIGALRM, [](int) {
    const char msg[] = "FAILED: the supervisor hung (draining or recovering)\n";
    (void)!write(1, msg, sizeof msg - 1);
    for (int i = 0; i < kWorkers; ++i) {
      if (g_workers[i] > 0) kill(g_workers[i], SIGKILL);
    }
    _exit(1);
  });
  alarm(unsigned(seconds) + 90);

  void* mem = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 2;
  g = new (mem) Shared();

  char tmpl[] = "/tmp/locktable-torture-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 2;
  std::string dir = std::string(tmpl) + "/t";
  std::unique_ptr<testing::EtcdProcess> etcd;
  if (g_etcd) {
    etcd = std::make_unique<testing::EtcdProcess>(testing::free_loopback_ports(2));
    if (!etcd->ready()) {
      std::fprintf(stderr, "etcd did not start on %s (is etcd-server installed?); it wrote:\n%s", etcd->client().c_str(),
                   etcd->log_tail().c_str());
      return 2;
    }
    dir = etcd->url("torture", "?ttl=2");
  }

  Options options;
  options.initial_slots = 8;  // the scratch names make it grow
  options.ring_entries = 1u << 20;  // 4094 events per worker between drains
  options.retention_count = 0;  // keep every event: invariant 3 looks for each takeover
  options.lmdb_map_size = kMapSize;
  std::unique_ptr<Table> table;
  if (Status s = Table::open(dir, options, &table); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    return 2;
  }
  for (int i = 0; i < kLocks; ++i) {
    Lock l;
    if (!table->lookup(lock_name(i), &l).ok()) return 2;
  }

  std::mt19937_64 rng(seed);
  std::vector<pid_t> pids(kWorkers);
  for (int w = 0; w < kWorkers; ++w) pids[size_t(w)] = spawn_worker(dir, w, rng());

  uint64_t kills = 0, recoveries = 0;
  auto end = Clock::now() + std::chrono::seconds(seconds);
  auto next_drain = Clock::now();
  while (Clock::now() < end && g->violations.load() == 0) {
    usleep(g_etcd ? useconds_t(400'000 + rng() % 600'000) : useconds_t(500 + rng() % 20000));
    int w = int(rng() % kWorkers);
    // On etcd most workers wait most of the time, and each killed waiter
    // stalls its lock for the TTL: aim three kills in four at a worker inside
    // a lock (looking for one for up to half a second).
    if (g_etcd && rng() % 4 != 0) {
      for (int tries = 0; tries < 100; ++tries, usleep(5000)) {
        const int start = int(rng() % uint32_t(kLocks * (kWorkers + 1)));
        int found = -1;
        for (int n = 0; n < kLocks * (kWorkers + 1) && found < 0; ++n) {
          const int i = (start + n) % (kLocks * (kWorkers + 1));
          const Shared::PerLock& pl = g->locks[i / (kWorkers + 1)];
          const int k = i % (kWorkers + 1);
          const uint32_t inside = k == kWorkers ? pl.writer.load() : pl.readers[k].load();
          for (int j = 0; j < kWorkers && inside != 0; ++j) {
            if (uint32_t(pids[size_t(j)]) == inside) found = j;
          }
        }
        if (found >= 0) {
          w = found;
          break;
        }
      }
    }
    if (rng() % 3 != 0) {
      kill(pids[size_t(w)], SIGKILL);
      ++kills;
    }
    // Reap whoever died (killed, or by an armed crash point) and replace it.
    for (int i = 0; i < kWorkers; ++i) {
      int status = 0;
      if (waitpid(pids[size_t(i)], &status, WNOHANG) == pids[size_t(i)]) {
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0) violation("worker %u exited with %u", uint32_t(pids[size_t(i)]), uint32_t(WEXITSTATUS(status)));
        pids[size_t(i)] = spawn_worker(dir, i, rng());
      }
    }
    if (Clock::now() >= next_drain) {
      (void)table->drain_history();
      if (rng() % 4 == 0) {
        std::vector<Recovery> actions;
        (void)table->recover(false, &actions);
        recoveries += actions.size();
      }
      next_drain = Clock::now() + std::chrono::milliseconds(100);
    }
  }

  // Stop: every worker must finish its iteration and exit within 30 s.
  g->stop.store(1);
  auto deadline = Clock::now() + std::chrono::seconds(30);
  for (int i = 0; i < kWorkers; ++i) {
    for (;;) {
      int status = 0;
      pid_t r = waitpid(pids[size_t(i)], &status, WNOHANG);
      if (r == pids[size_t(i)]) break;
      if (Clock::now() > deadline) {
        violation("worker %u did not stop within 30 s", uint32_t(pids[size_t(i)]));
        kill(pids[size_t(i)], SIGKILL);
        waitpid(pids[size_t(i)], &status, 0);
        break;
      }
      usleep(10000);
    }
  }

  std::vector<Recovery> actions;
  if (Status s = table->recover(false, &actions); !s.ok()) violation("recover failed");
  std::vector<std::string> problems;
  if (Status s = table->check(&problems); !s.ok()) violation("check could not run");
  for (const std::string& p : problems) {
    std::printf("check: %s\n", p.c_str());
    violation("check found a problem (printed above)");
  }
  if (!problems.empty() && !g_etcd && getenv("TORTURE_DEBUG")) dump_state(dir, *table);
  check_takeovers(*table);

  std::printf("%llu kills, %llu crash points armed, %llu acquisitions (%llu by acquire_all calls, %llu downgrades), "
              "%llu abandoned, %llu names created, %llu recovered by recover()\n",
              (unsigned long long)kills, (unsigned long long)g->crash_points.load(),
              (unsigned long long)g->acquisitions.load(), (unsigned long long)g->all_acquisitions.load(),
              (unsigned long long)g->downgrades.load(), (unsigned long long)g->abandoned.load(),
              (unsigned long long)g->creations.load(), (unsigned long long)recoveries);
  uint32_t v = g->violations.load();
  for (uint32_t i = 0; i < std::min<uint32_t>(v, kMaxMessages); ++i) std::printf("VIOLATION: %s\n", g->messages[i]);
  table.reset();
  std::filesystem::remove_all(tmpl);
  if (v != 0) {
    std::printf("FAILED: %u violations (seed %llu)\n", v, (unsigned long long)seed);
    return 1;
  }
  if (g->abandoned.load() == 0 || kills == 0) {
    std::printf("FAILED: the run saw no kill or no abandoned acquisition; it proved nothing\n");
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
