// The lock manager's promises, with real processes: a cycle of waits is
// broken once, within the deadlock timeout, and never reported where there is
// none; fencing tokens only grow (across holders, a killed holder, removal and
// re-creation, a reboot); acquire_all in opposite orders never deadlocks and
// reports what it took over; a downgrade lets readers in and keeps writers out.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <thread>

#include "helpers.h"
#include "system_info.h"

using namespace locktable;
using testing::open_table;
using testing::Pipe;
using testing::shared_memory;
using testing::spawn;
using testing::spawn_holder;
using testing::TempDir;
using testing::wait_child;

namespace {

Options with_deadlock_timeout(std::chrono::milliseconds timeout) {
  Options o;
  o.deadlock_timeout = timeout;
  return o;
}

// What each member of a cycle reports.
struct CycleReport {
  std::atomic<int> deadlocks{0};
  std::atomic<int> acquired{0};
  std::atomic<int> errors{0};
  std::atomic<int64_t> victim_wait_ms{-1};
  char message[512] = {};
};

// A member of a cycle: holds names[i], then (once every member holds its
// first lock) waits for names[(i + 1) % n]. Told deadlock, it releases and
// exits; otherwise it gets the second lock, releases both and exits.
pid_t cycle_member(const std::string& dir, const std::vector<std::string>& names, size_t i,
                   std::chrono::milliseconds timeout, const Pipe& ready, const Pipe& go, CycleReport* report) {
  return spawn([&, i] {
    std::unique_ptr<Table> t;
    if (!Table::open(dir, with_deadlock_timeout(timeout), &t).ok()) return 10;
    Lock first, second;
    if (!t->lookup(names[i], &first).ok() || !t->lookup(names[(i + 1) % names.size()], &second).ok()) return 11;
    if (!first.acquire().held()) return 12;
    ready.send();
    if (go.receive() == 0) return 13;
    const double start = testing::now_ms();
    AcquireResult r = second.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
    const double waited = testing::now_ms() - start;
    if (r.status.code() == Code::deadlock) {
      report->deadlocks.fetch_add(1);
      report->victim_wait_ms = int64_t(waited);
      std::strncpy(report->message, r.status.message().c_str(), sizeof report->message - 1);
      (void)first.release();
      return 0;
    }
    if (!r.held()) {
      report->errors.fetch_add(1);
      return 14;
    }
    report->acquired.fetch_add(1);
    (void)second.release();
    (void)first.release();
    return 0;
  });
}

void check_cycle_broken_once(size_t members) {
  TempDir tmp;
  auto t = open_table(tmp.table());
  constexpr auto kTimeout = std::chrono::milliseconds(300);
  std::vector<std::string> names;
  for (size_t i = 0; i < members; ++i) names.push_back("cycle-" + std::to_string(i));
  CycleReport* report = shared_memory<CycleReport>();
  Pipe ready, go;
  std::vector<pid_t> kids;
  for (size_t i = 0; i < members; ++i) kids.push_back(cycle_member(tmp.table(), names, i, kTimeout, ready, go, report));
  for (size_t i = 0; i < members; ++i) REQUIRE(ready.receive() != 0);
  for (size_t i = 0; i < members; ++i) go.send();
  for (pid_t k : kids) CHECK(wait_child(k, 30000) == 0);
  INFO(report->message);
  CHECK(report->errors == 0);
  CHECK(report->deadlocks == 1);
  CHECK(report->acquired == int(members) - 1);
  // The victim is the last to begin waiting; it gave up within the timeout
  // plus 100 ms of starting to wait.
  CHECK(report->victim_wait_ms >= kTimeout.count());
  CHECK(report->victim_wait_ms <= kTimeout.count() + 100);
  // The message names every lock of the cycle and says who gives up.
  for (const std::string& name : names) CHECK(std::strstr(report->message, ("'" + name + "'").c_str()) != nullptr);
  CHECK(std::strstr(report->message, "deadlock") != nullptr);
  // And the history says so, once.
  std::vector<Event> events;
  HistoryQuery q;
  q.kind = EventKind::deadlock;
  REQUIRE(t->history(q, &events).ok());
  CHECK(events.size() == 1);
}

}  // namespace

TEST_CASE("a 2-process cycle is broken within the deadlock timeout, by exactly one deadlock; the other acquires") {
  check_cycle_broken_once(2);
}

TEST_CASE("a 3-process cycle is broken within the deadlock timeout, by exactly one deadlock; the others acquire") {
  check_cycle_broken_once(3);
}

TEST_CASE("random lock orders without cycles never report a deadlock") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  struct Report {
    std::atomic<int> deadlocks{0};
    std::atomic<int> failures{0};
    std::atomic<uint64_t> acquisitions{0};
  };
  Report* report = shared_memory<Report>();
  constexpr int kProcs = 4, kLocks = 5;
  const double until = testing::now_ms() + 3000;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    kids.push_back(spawn([&, p] {
      std::unique_ptr<Table> tt;
      // Walks very often: every waiter past 2 ms looks for cycles.
      if (!Table::open(tmp.table(), with_deadlock_timeout(std::chrono::milliseconds(2)), &tt).ok()) return 10;
      std::vector<Lock> locks(kLocks);
      for (int i = 0; i < kLocks; ++i) {
        if (!tt->lookup("ordered-" + std::to_string(i), &locks[size_t(i)]).ok()) return 11;
      }
      std::mt19937 rng(uint32_t(p) * 7919u + 1);
      while (testing::now_ms() < until) {
        // A random subset, taken in one global order (by index): no cycle can form.
        std::vector<std::pair<int, Mode>> held;
        for (int i = 0; i < kLocks; ++i) {
          if (rng() % 2) continue;
          Mode m = rng() % 3 == 0 ? Mode::shared : Mode::exclusive;
          AcquireResult r = locks[size_t(i)].acquire(m, Deadline::after(std::chrono::seconds(20)));
          if (r.status.code() == Code::deadlock) report->deadlocks.fetch_add(1);
          if (!r.held()) {
            report->failures.fetch_add(1);
            break;
          }
          report->acquisitions.fetch_add(1);
          held.emplace_back(i, m);
          if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
        }
        for (auto it = held.rbegin(); it != held.rend(); ++it) (void)locks[size_t(it->first)].release(it->second);
      }
      return 0;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k, 60000) == 0);
  CHECK(report->deadlocks == 0);
  CHECK(report->failures == 0);
  CHECK(report->acquisitions > 1000);
}

TEST_CASE("a waiter past its timeout that only waits for a dead holder is never told deadlock") {
  TempDir tmp;
  auto t = open_table(tmp.table(), with_deadlock_timeout(std::chrono::milliseconds(50)));
  Lock a;
  REQUIRE(t->lookup("a", &a).ok());
  pid_t holder = spawn_holder(tmp.table(), "a");
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(holder, SIGKILL);
  });
  AcquireResult r = a.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  killer.join();
  wait_child(holder);
  CHECK(r.status.code() == Code::abandoned);
  (void)a.release();
}

TEST_CASE("ls lists each waiter with what it waits for, and ls --waits the cycle") {
  // (The CLI half is in test_cli.cc; this checks the API listing.)
  TempDir tmp;
  auto t = open_table(tmp.table());
  pid_t holder = spawn_holder(tmp.table(), "busy");
  Pipe started;
  pid_t waiter = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = testing::child_lock(tmp.table(), "busy", &tt);
    started.send();
    (void)l.acquire(Mode::shared, Deadline::after(std::chrono::seconds(30)));
    return 0;
  });
  REQUIRE(started.receive() != 0);
  std::vector<LockInfo> locks;
  const double until = testing::now_ms() + 5000;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(t->list(&locks).ok());
  } while ((locks.empty() || locks[0].waiting.empty()) && testing::now_ms() < until);
  REQUIRE(locks.size() == 1);
  REQUIRE(locks[0].waiting.size() == 1);
  CHECK(locks[0].waiting[0].owner.pid == uint32_t(waiter));
  CHECK(locks[0].waiting[0].mode == Mode::shared);
  REQUIRE(locks[0].holders.size() == 1);
  CHECK(locks[0].holders[0].token > 0);
  ::kill(waiter, SIGKILL);
  ::kill(holder, SIGKILL);
  wait_child(waiter);
  wait_child(holder);
}

// ---------------------------------------------------------------------------
// Fencing tokens.
// ---------------------------------------------------------------------------
TEST_CASE("tokens grow strictly with every new holder, in every process") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("fenced", &l).ok());
  uint64_t last = 0;
  for (int round = 0; round < 3; ++round) {
    AcquireResult r = l.acquire();
    REQUIRE(r.held());
    CHECK(r.token > last);
    CHECK(l.token() == r.token);
    last = r.token;
    REQUIRE(l.release().ok());
    CHECK(l.token() == 0);
    // Another process takes it in between.
    Pipe got;
    uint64_t* seen = shared_memory<uint64_t>();
    pid_t kid = spawn([&] {
      std::unique_ptr<Table> tt;
      Lock cl = testing::child_lock(tmp.table(), "fenced", &tt);
      AcquireResult cr = cl.acquire();
      if (!cr.held()) return 1;
      *seen = cr.token;
      return cl.release().ok() ? 0 : 2;
    });
    REQUIRE(wait_child(kid) == 0);
    CHECK(*seen > last);
    last = *seen;
  }
  // A shared holder reads in the epoch of the last exclusive hold.
  AcquireResult shared = l.acquire(Mode::shared);
  REQUIRE(shared.held());
  CHECK(shared.token == last);
  REQUIRE(l.release(Mode::shared).ok());
  // History carries them.
  std::vector<Event> events;
  HistoryQuery q;
  q.kind = EventKind::acquired;
  REQUIRE(t->history(q, &events).ok());
  REQUIRE(events.size() == 7);
  for (size_t i = 1; i + 1 < events.size(); ++i) CHECK(events[i].token > events[i - 1].token);
  CHECK(events.back().token == last);
}

TEST_CASE("a SIGKILLed holder's successor gets a larger token") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("fenced", &l).ok());
  pid_t holder = spawn_holder(tmp.table(), "fenced");
  std::vector<LockInfo> locks;
  REQUIRE(t->list(&locks).ok());
  REQUIRE(locks.size() == 1);
  REQUIRE(locks[0].holders.size() == 1);
  const uint64_t dead_token = locks[0].holders[0].token;
  CHECK(dead_token > 0);
  ::kill(holder, SIGKILL);
  wait_child(holder);
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  REQUIRE(r.abandoned());
  CHECK(r.token > dead_token);
  REQUIRE(l.mark_consistent().ok());
  REQUIRE(l.release().ok());
}

TEST_CASE("tokens keep growing across removal and re-creation of a name, in its old slot or a new one") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("fenced", &l).ok());
  uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    AcquireResult r = l.acquire();
    REQUIRE(r.held());
    last = r.token;
    REQUIRE(l.release().ok());
  }
  for (bool same_slot : {true, false}) {
    REQUIRE(t->remove("fenced").ok());
    Lock filler;
    if (!same_slot) REQUIRE(t->lookup("filler-" + std::to_string(last), &filler).ok());  // takes the freed slot
    REQUIRE(t->lookup("fenced", &l).ok());
    AcquireResult r = l.acquire();
    REQUIRE(r.held());
    CHECK(r.token > last);
    last = r.token;
    REQUIRE(l.release().ok());
  }
}

TEST_CASE("tokens keep growing across the reset after a reboot") {
  TempDir tmp;
  uint64_t last = 0;
  {
    auto t = open_table(tmp.table());
    Lock l;
    REQUIRE(t->lookup("fenced", &l).ok());
    AcquireResult r = l.acquire();
    REQUIRE(r.held());
    last = r.token;
    REQUIRE(l.release().ok());
  }
  {
    testing::RawTable raw(tmp.table());
    raw.header()->boot_id[0] ^= 0xff;  // a table from an earlier boot
  }
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("fenced", &l).ok());
  AcquireResult r = l.acquire();
  REQUIRE(r.held());
  CHECK(r.token > last);
  REQUIRE(l.release().ok());
  testing::RawTable raw(tmp.table());
  CHECK(raw.header()->reset_count == 1);
}

// ---------------------------------------------------------------------------
// Several locks at once.
// ---------------------------------------------------------------------------
TEST_CASE("acquire_all racing acquire_all in opposite orders never deadlocks, and excludes") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  struct Report {
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    std::atomic<int> failures{0};
  };
  Report* report = shared_memory<Report>();
  const std::vector<std::string> names = {"a", "b", "c", "d"};
  std::vector<pid_t> kids;
  for (int p = 0; p < 2; ++p) {
    kids.push_back(spawn([&, p] {
      std::unique_ptr<Table> tt;
      // Detection off: a deadlock would hang until the deadline.
      if (!Table::open(tmp.table(), with_deadlock_timeout(std::chrono::milliseconds(0)), &tt).ok()) return 10;
      std::vector<Lock> locks;
      if (!tt->lookup(names, &locks).ok()) return 11;
      std::vector<LockRequest> requests;
      for (Lock& l : locks) requests.push_back(LockRequest{&l, Mode::exclusive});
      if (p == 1) std::reverse(requests.begin(), requests.end());
      for (int i = 0; i < 3000; ++i) {
        AcquireAllResult r = tt->acquire_all(requests, Deadline::after(std::chrono::seconds(10)));
        if (!r.status.ok()) {
          report->failures.fetch_add(1);
          return 12;
        }
        if (report->inside.fetch_add(1) != 0) report->overlaps.fetch_add(1);
        report->inside.fetch_sub(1);
        if (!tt->release_all(requests).ok()) return 13;
      }
      return 0;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k, 60000) == 0);
  CHECK(report->failures == 0);
  CHECK(report->overlaps == 0);
}

TEST_CASE("acquire_all is all or nothing, reports the abandoned ones, and refuses a name twice") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  std::vector<Lock> locks;
  REQUIRE(t->lookup(std::vector<std::string>{"x", "y", "z"}, &locks).ok());
  std::vector<LockRequest> requests = {{&locks[0], Mode::exclusive}, {&locks[1], Mode::shared},
                                       {&locks[2], Mode::exclusive}};
  // z is held elsewhere: a try takes none.
  pid_t holder = spawn_holder(tmp.table(), "z");
  AcquireAllResult r = t->acquire_all(requests, Deadline::now());
  CHECK(r.status.code() == Code::timed_out);
  CHECK(locks[0].try_acquire().held());  // x and y were released again
  REQUIRE(locks[0].release().ok());
  CHECK(locks[1].try_acquire().held());
  REQUIRE(locks[1].release().ok());
  // Its holder dies: the next acquire_all takes it over and says so.
  ::kill(holder, SIGKILL);
  wait_child(holder);
  r = t->acquire_all(requests, Deadline::after(std::chrono::seconds(10)));
  REQUIRE(r.held());
  CHECK(r.status.code() == Code::abandoned);
  REQUIRE(r.abandoned == std::vector<size_t>{2});
  CHECK(r.dead_owners[0].pid == uint32_t(holder));
  CHECK(r.tokens[0] > 0);
  CHECK(r.tokens[2] > 0);
  CHECK(locks[2].abandoned());
  REQUIRE(locks[2].mark_consistent().ok());
  REQUIRE(t->release_all(requests).ok());
  // A name twice, an empty handle.
  std::vector<LockRequest> twice = {{&locks[0], Mode::exclusive}, {&locks[0], Mode::shared}};
  CHECK(t->acquire_all(twice).status.code() == Code::invalid_argument);
  Lock empty;
  CHECK(t->acquire_all({{&empty, Mode::exclusive}}).status.code() == Code::invalid_argument);
}

// ---------------------------------------------------------------------------
// Downgrade.
// ---------------------------------------------------------------------------
TEST_CASE("a downgrade lets waiting readers in and keeps writers out, with the same token") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("doc", &l).ok());
  AcquireResult mine = l.acquire();
  REQUIRE(mine.held());
  CHECK(l.downgrade().ok() == true);
  CHECK(l.token() == mine.token);
  CHECK(l.downgrade().code() == Code::not_owner);  // not exclusive any more
  // A reader in another process gets in while this thread holds it shared;
  // a writer does not.
  Pipe in;
  pid_t reader = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock cl = testing::child_lock(tmp.table(), "doc", &tt);
    if (!cl.acquire(Mode::shared, Deadline::after(std::chrono::seconds(10))).held()) return 1;
    in.send();
    return cl.release(Mode::shared).ok() ? 0 : 2;
  });
  CHECK(in.receive(10000) != 0);
  CHECK(wait_child(reader) == 0);
  pid_t writer = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock cl = testing::child_lock(tmp.table(), "doc", &tt);
    return cl.try_acquire().status.code() == Code::timed_out ? 0 : 1;
  });
  CHECK(wait_child(writer) == 0);
  REQUIRE(l.release(Mode::shared).ok());
  CHECK(l.try_acquire().held());
  REQUIRE(l.release().ok());
}

TEST_CASE("no writer ever slips in between a downgrade's exclusive and shared hold") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  struct Report {
    std::atomic<int> downgraded{0};  // a downgrader holds (exclusive, then shared)
    std::atomic<int> violations{0};
    std::atomic<uint64_t> downgrades{0};
  };
  Report* report = shared_memory<Report>();
  const double until = testing::now_ms() + 1500;
  std::vector<pid_t> kids;
  for (int p = 0; p < 3; ++p) {
    kids.push_back(spawn([&, p] {
      std::unique_ptr<Table> tt;
      Lock l = testing::child_lock(tmp.table(), "doc", &tt);
      while (testing::now_ms() < until) {
        if (p == 0) {  // the downgrader
          if (!l.acquire().held()) return 1;
          report->downgraded = 1;
          if (!l.downgrade().ok()) return 2;
          std::this_thread::yield();
          report->downgraded = 0;
          if (!l.release(Mode::shared).ok()) return 3;
          report->downgrades.fetch_add(1);
        } else {  // writers
          if (!l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10))).held()) return 4;
          if (report->downgraded != 0) report->violations.fetch_add(1);
          if (!l.release().ok()) return 5;
        }
      }
      return 0;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k, 60000) == 0);
  CHECK(report->violations == 0);
  CHECK(report->downgrades > 10);
}
