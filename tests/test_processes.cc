// Multi-process behaviour with real processes: exclusion, death of a holder
// (SIGKILL, thread exit, exec, pid reuse as seen by a forged record), fork.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

#include <fmt/format.h>
#include <mutex>
#include <thread>

#include "atomic128.h"
#include "helpers.h"
#include "thread_self.h"

using namespace locktable;
using testing::child_lock;
using testing::open_table;
using testing::Pipe;
using testing::shared_memory;
using testing::spawn;
using testing::spawn_holder;
using testing::TempDir;
using testing::wait_child;

namespace {

struct Counter {
  volatile uint64_t value = 0;
  volatile int inside = 0;
  volatile int overlaps = 0;
};

// A child that writes itself in as the owner of `slot` with a bare CAS, as a
// process whose robust list is unusable would, and exits 0 (1 if the CAS
// failed): the kernel does not mark the record at its death.
pid_t spawn_unmarked_owner(const std::string& dir, uint32_t slot) {
  return spawn([&] {
    testing::RawTable raw(dir);
    detail::ThreadSelf& me = detail::thread_self();
    detail::Word128 cur = detail::load128(&raw.slot(slot)->owner);
    detail::Word128 mine = detail::make_word(me.tid, me.pid, me.start, detail::generation(cur) + 1);
    return detail::cas128(&raw.slot(slot)->owner, cur, mine) ? 0 : 1;
  });
}

}  // namespace

TEST_CASE("N processes incrementing a shared counter under the lock lose no increment") {
  TempDir tmp;
  open_table(tmp.table());
  Counter* c = shared_memory<Counter>();
  constexpr int kProcs = 4, kIters = 20000;
  std::vector<pid_t> kids;
  for (int i = 0; i < kProcs; ++i) {
    kids.push_back(spawn([&] {
      std::unique_ptr<Table> t;
      Lock l = child_lock(tmp.table(), "counter", &t);
      for (int n = 0; n < kIters; ++n) {
        if (!l.acquire().status.ok()) return 1;
        if (c->inside != 0) c->overlaps = c->overlaps + 1;
        c->inside = 1;
        uint64_t v = c->value;  // a read-modify-write that only the lock protects
        if (n % 64 == 0) sched_yield();
        c->value = v + 1;
        c->inside = 0;
        if (!l.release().ok()) return 2;
      }
      return 0;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k) == 0);
  CHECK(c->value == uint64_t(kProcs) * kIters);
  CHECK(c->overlaps == 0);
}

TEST_CASE("SIGKILL of a holder: exactly one waiter is told abandoned, the others acquire normally") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Pipe results;
  pid_t holder = spawn_holder(tmp.table(), "orders");

  constexpr int kWaiters = 3;
  std::vector<pid_t> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      Lock l = child_lock(tmp.table(), "orders", &tt);
      AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30)));
      if (r.abandoned()) {
        // The dead owner is named, and it is the holder we were told about.
        if (r.dead_owner.pid != uint32_t(holder) || r.dead_owner.tid != uint32_t(holder)) return 5;
        results.send('A');
        (void)l.mark_consistent();  // repaired: later holders acquire normally
      } else if (r.status.ok()) {
        results.send('O');
      } else {
        return 3;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return l.release().ok() ? 0 : 4;
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let them block
  double killed_at = testing::now_ms();
  REQUIRE(::kill(holder, SIGKILL) == 0);
  CHECK(wait_child(holder) == 128 + SIGKILL);
  int abandoned = 0, plain = 0;
  double first_result_at = 0;
  for (int i = 0; i < kWaiters; ++i) {
    char c = results.receive();
    if (i == 0) first_result_at = testing::now_ms();
    abandoned += c == 'A';
    plain += c == 'O';
  }
  for (pid_t w : waiters) CHECK(wait_child(w) == 0);
  CHECK(abandoned == 1);
  CHECK(plain == kWaiters - 1);
  CHECK(first_result_at - killed_at < 5000);  // found promptly (the benchmark measures how promptly)

  Lock l;
  REQUIRE(t->lookup("orders", &l).ok());
  CHECK(l.acquire().status.ok());  // consistent again
  CHECK(l.release().ok());
}

TEST_CASE("abandonment carries on until a holder marks the lock consistent") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  pid_t holder = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = child_lock(tmp.table(), "ledger", &tt);
    if (!l.acquire().status.ok()) return 1;
    ::raise(SIGKILL);
    return 0;
  });
  CHECK(wait_child(holder) == 128 + SIGKILL);
  Lock l;
  REQUIRE(t->lookup("ledger", &l).ok());
  AcquireResult r = l.acquire();
  REQUIRE(r.abandoned());
  CHECK(r.dead_owner.pid == uint32_t(holder));
  CHECK(r.dead_owner.start_time != 0);  // what tells a reused pid apart
  CHECK(l.abandoned());
  REQUIRE(l.release().ok());  // released without repair
  std::thread([&] {           // another thread (or process) is told again, of the same holder
    AcquireResult again = l.acquire();
    CHECK(again.abandoned());
    CHECK(again.dead_owner == r.dead_owner);
    CHECK(l.mark_consistent().ok());
    CHECK_FALSE(l.abandoned());
    CHECK(l.release().ok());
  }).join();
  r = l.acquire();
  CHECK(r.status.ok());
  CHECK_FALSE(l.abandoned());
  CHECK(l.release().ok());
  // Lockable use: lock() succeeds, abandoned() tells.
  pid_t holder2 = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l2 = child_lock(tmp.table(), "ledger", &tt);
    l2.lock();
    ::raise(SIGKILL);
    return 0;
  });
  CHECK(wait_child(holder2) == 128 + SIGKILL);
  {
    std::unique_lock<Lock> guard(l);
    CHECK(guard.owns_lock());
    CHECK(l.abandoned());
    CHECK(l.mark_consistent().ok());
  }
}

TEST_CASE("a thread that exits holding a lock leaves it abandoned") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("t", &l).ok());
  uint32_t dead_tid = 0;
  std::thread([&] {
    REQUIRE(l.acquire().status.ok());
    dead_tid = uint32_t(::gettid());
  }).join();
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(r.abandoned());
  CHECK(r.dead_owner.tid == dead_tid);
  CHECK(r.dead_owner.pid == uint32_t(::getpid()));
  CHECK(l.release().ok());
}

TEST_CASE("a holder that execs a new program while holding leaves the lock abandoned, found at once") {
  // After exec the process lives on with the same pid and start time, so the
  // liveness check alone would call the holder alive for ever: only the
  // kernel's robust-list walk at exec can free the lock.
  TempDir tmp;
  auto t = open_table(tmp.table());
  pid_t holder = testing::spawn_exec_holder(tmp.table(), "exec", Mode::exclusive);
  Lock l;
  REQUIRE(t->lookup("exec", &l).ok());
  testing::expect_takeover(l, holder);
  CHECK(::kill(holder, 0) == 0);  // the process itself still runs (now as sleep)
  CHECK(l.mark_consistent().ok());
  CHECK(l.release().ok());
  ::kill(holder, SIGKILL);
  CHECK(wait_child(holder) == 128 + SIGKILL);
}

TEST_CASE("a holder that died without kernel notification is found by the liveness check") {
  // A child writes itself in as owner with a bare CAS, as a process whose
  // robust list is unusable would, then dies: the kernel does not mark the
  // record, so only the /proc check can find it.
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("p", &l).ok());
  pid_t kid = spawn_unmarked_owner(tmp.table(), l.slot());
  REQUIRE(wait_child(kid) == 0);
  CHECK(l.try_acquire().status.code() == Code::timed_out);  // a try does not wait for a check
  testing::expect_takeover(l, kid);
  CHECK(l.release().ok());
}

TEST_CASE("a holder that died without kernel notification and is not yet reaped (a zombie) is found dead") {
  // As above, but the parent does not wait for the child until after the
  // acquire: the pid and tid still exist, with the right start time, as a
  // zombie, which must count as dead.
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("z", &l).ok());
  pid_t kid = spawn_unmarked_owner(tmp.table(), l.slot());
  REQUIRE(testing::ends_within(kid, 10000));  // not waited for: a zombie
  REQUIRE(::kill(kid, 0) == 0);               // the pid still exists
  testing::expect_takeover(l, kid);
  CHECK(l.release().ok());
  CHECK(wait_child(kid) == 0);
}

TEST_CASE("a stopped holder (SIGSTOP) is alive: waiters time out, and after SIGCONT it releases normally") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("stopped", &l).ok());
  Pipe release;
  pid_t holder = testing::spawn_releasing_holder(tmp.table(), "stopped", Mode::exclusive, release);
  REQUIRE(::kill(holder, SIGSTOP) == 0);
  // Long enough for every liveness check of the waiting schedule (up to 50 ms apart).
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(400)));
  CHECK(r.status.code() == Code::timed_out);
  CHECK(l.try_acquire(Mode::shared).status.code() == Code::timed_out);
  std::vector<Recovery> actions;
  REQUIRE(t->recover(false, &actions).ok());
  CHECK(actions.empty());  // recover frees nothing of a live holder
  release.send();  // read when it runs again
  REQUIRE(::kill(holder, SIGCONT) == 0);
  AcquireResult after = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(after.status.ok());  // released by its holder: not abandoned
  CHECK(wait_child(holder) == 0);
  CHECK(l.release().ok());
}

TEST_CASE("an owner record whose pid is alive but whose start time differs is a dead owner (pid reuse)") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("reused", &l).ok());
  testing::RawTable raw(tmp.table());
  detail::ThreadSelf& me = detail::thread_self();
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> other_tid{0};
  std::thread live([&] {  // a live thread whose tid we forge records for
    other_tid = uint32_t(::gettid());
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (other_tid == 0) std::this_thread::yield();
  uint64_t real_start = 0;
  char state = 0;
  REQUIRE(detail::read_thread_stat(me.pid, other_tid, &real_start, &state));
  auto forge = [&](uint32_t start) {
    detail::Word128 cur = detail::load128(&raw.slot(l.slot())->owner);
    REQUIRE(detail::cas128(&raw.slot(l.slot())->owner, cur,
                           detail::make_word(other_tid, me.pid, start, detail::generation(cur) + 1)));
  };

  SECTION("right start time: alive, never taken over") {
    forge(uint32_t(real_start));
    AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(300)));
    CHECK(r.status.code() == Code::timed_out);
    // Clean up as the "owner" would.
    detail::Word128 cur = detail::load128(&raw.slot(l.slot())->owner);
    REQUIRE(detail::cas128(&raw.slot(l.slot())->owner, cur, detail::make_word(0, 0, 0, detail::generation(cur) + 1)));
  }
  SECTION("wrong start time: another thread now has that pid/tid, so the owner is dead") {
    forge(uint32_t(real_start) + 12345);
    AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
    CHECK(r.abandoned());
    CHECK(r.dead_owner.tid == other_tid);
    CHECK(l.release().ok());
  }
  stop = true;
  live.join();
}

TEST_CASE("a child after fork does not own its parent's locks") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("forked", &l).ok());
  REQUIRE(l.acquire().status.ok());
  Pipe go;
  pid_t kid = spawn([&] {
    if (l.release().code() != Code::not_owner) return 1;       // not the child's to release
    if (l.try_acquire().status.code() != Code::timed_out) return 2;  // held by the parent
    if (go.receive() != '.') return 3;
    AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
    if (!r.status.ok()) return 4;  // a live parent released it: not abandoned
    return l.release().ok() ? 0 : 5;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(l.release().ok());
  go.send();
  CHECK(wait_child(kid) == 0);
}

TEST_CASE("a child after fork that shares its parent's lock and is killed takes none of the parent's holds with it") {
  // The child inherits the thread's robust list and its table of shared
  // holds; neither may make the parent's holds the child's, before or at its
  // death: only the child's own shared hold is left abandoned.
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock s, x;
  REQUIRE(t->lookup("s", &s).ok());
  REQUIRE(t->lookup("x", &x).ok());
  REQUIRE(s.acquire(Mode::shared).status.ok());
  REQUIRE(x.acquire().status.ok());
  Pipe joined;
  pid_t kid = spawn([&] {
    if (s.release(Mode::shared).code() != Code::not_owner) return 1;  // the parent's hold, not the child's
    if (x.release().code() != Code::not_owner) return 2;
    if (x.try_acquire().status.code() != Code::timed_out) return 3;  // held by the parent
    if (!s.try_acquire(Mode::shared).status.ok()) return 4;         // a reader of its own, beside the parent
    if (!s.release(Mode::shared).ok()) return 5;
    if (!s.try_acquire(Mode::shared).status.ok()) return 6;
    joined.send();
    ::pause();  // killed holding s shared
    return 7;
  });
  REQUIRE(joined.receive() == '.');
  ::kill(kid, SIGKILL);
  CHECK(wait_child(kid) == 128 + SIGKILL);
  Code other_thread = Code::ok;  // Catch2 assertions are not thread-safe: check after join
  std::thread([&] { other_thread = x.try_acquire().status.code(); }).join();
  CHECK(other_thread == Code::timed_out);  // still the parent's
  CHECK(x.release().ok());
  CHECK(s.release(Mode::shared).ok());
  AcquireResult rx = x.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(rx.status.ok());  // released by its live holder: not abandoned
  CHECK(x.release().ok());
  AcquireResult rs = s.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(rs.abandoned());  // the child's reader died in it
  CHECK(rs.dead_owner.pid == uint32_t(kid));
  CHECK(s.mark_consistent().ok());
  CHECK(s.release().ok());
}

TEST_CASE("a table used after fork refuses LMDB work in the child with unsupported, as every backend; locks keep working") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("x", &l).ok());
  pid_t kid = spawn([&] {
    Lock other;
    Status s = t->lookup("y", &other);
    std::vector<LockInfo> locks;
    if (s.code() != Code::unsupported || t->list(&locks).code() != Code::unsupported) return 1;
    if (s.message().find(tmp.table()) == std::string::npos || s.message().find("after fork()") == std::string::npos) {
      return 4;
    }
    if (!l.acquire().status.ok()) return 2;
    if (!l.release().ok()) return 3;
    std::unique_ptr<Table> again;  // the child's own
    return Table::open(tmp.table(), {}, &again).ok() && again->lookup("y", &other).ok() ? 0 : 5;
  });
  CHECK(wait_child(kid) == 0);
}

TEST_CASE("list(busy) names exactly the locks held, shared, waited for or left by a dead owner, among many free ones") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  std::vector<std::string> names;
  for (int i = 0; i < 1000; ++i) names.push_back(fmt::format("n{:04}", i));
  std::vector<Lock> locks;
  REQUIRE(t->lookup(names, &locks).ok());
  pid_t writer = spawn_holder(tmp.table(), "n0100");
  pid_t reader = spawn_holder(tmp.table(), "n0200", Mode::shared);
  pid_t held = spawn_holder(tmp.table(), "n0300");
  pid_t waiter = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = child_lock(tmp.table(), "n0300", &tt);
    return l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30))).held() ? 0 : 1;
  });
  pid_t dead = spawn_holder(tmp.table(), "n0400");
  REQUIRE(::kill(dead, SIGKILL) == 0);
  CHECK(wait_child(dead) == 128 + SIGKILL);

  auto busy_names = [&](ListScope scope) {
    std::set<std::string> out;
    REQUIRE(t->list(
                 [&](const LockInfo& l) {
                   if (scope == ListScope::all ? l.busy() : true) out.insert(l.name);
                   return Status::OK();
                 },
                 scope)
                .ok());
    return out;
  };
  // The waiter is seen once it has published its wait.
  const double until = testing::now_ms() + 10000;
  std::vector<LockInfo> listed;
  for (;;) {
    REQUIRE(t->list(&listed, ListScope::busy).ok());
    const bool waited = std::any_of(listed.begin(), listed.end(), [](const LockInfo& l) {
      return l.name == "n0300" && (l.waiters > 0 || !l.waiting.empty());
    });
    if (waited || testing::now_ms() > until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::set<std::string> expected{"n0100", "n0200", "n0300", "n0400"};
  CHECK(busy_names(ListScope::busy) == expected);
  CHECK(busy_names(ListScope::all) == expected);  // the same as filtering the full listing
  for (const LockInfo& l : listed) {
    if (l.name == "n0200") CHECK(l.state == LockState::shared);
    if (l.name == "n0300") CHECK((l.waiters > 0 || !l.waiting.empty()));
    if (l.name == "n0400") CHECK(l.holders.size() == 1);
    if (l.name == "n0400") CHECK_FALSE(l.holders[0].alive);
  }
  for (pid_t p : {writer, reader, held}) {
    ::kill(p, SIGKILL);
    wait_child(p);
  }
  CHECK(wait_child(waiter) == 0);  // told abandoned: held() counts it
  Lock l;
  REQUIRE(t->lookup("n0400", &l).ok());
  REQUIRE(l.acquire().abandoned());
  REQUIRE(l.mark_consistent().ok());
  REQUIRE(l.release().ok());
  // n0400 is free again; the others are held by dead processes (the waiter
  // exited holding n0300): still busy, each with a dead holder.
  CHECK(busy_names(ListScope::busy) == std::set<std::string>{"n0100", "n0200", "n0300"});
  REQUIRE(t->list(&listed, ListScope::busy).ok());
  for (const LockInfo& b : listed) {
    INFO(b.name);
    REQUIRE(b.holders.size() == 1);
    CHECK_FALSE(b.holders[0].alive);
  }
}
