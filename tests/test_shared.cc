// Shared (reader/writer) mode with real processes: readers share, writers
// exclude and are not starved, dead readers and writers are cleared and the
// next holder is told "abandoned", and a reader killed at any step of its
// join/leave transaction leaves a count that `check` finds consistent.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <thread>

#include "crash_point.h"
#include "helpers.h"

using namespace locktable;
using testing::child_lock;
using testing::open_table;
using testing::Pipe;
using testing::spawn;
using testing::spawn_holder;
using testing::TempDir;
using testing::wait_child;

namespace {

struct SharedState {
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::atomic<int> writer_inside{0};
  std::atomic<int> violations{0};
  std::atomic<bool> stop{false};
};

SharedState* shared_state() {
  void* p = ::mmap(nullptr, sizeof(SharedState), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(p != MAP_FAILED);
  return new (p) SharedState();
}

void expect_consistent(Table& t) {
  std::vector<std::string> problems;
  REQUIRE(t.check(&problems).ok());
  for (const auto& p : problems) UNSCOPED_INFO(p);
  CHECK(problems.empty());
}

}  // namespace

TEST_CASE("shared: many readers hold the lock at once") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  SharedState* st = shared_state();
  constexpr int kReaders = 4;
  std::vector<pid_t> kids;
  for (int i = 0; i < kReaders; ++i) {
    kids.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      Lock l = child_lock(tmp.table(), "catalog", &tt);
      if (!l.acquire(Mode::shared, Deadline::after(std::chrono::seconds(10))).status.ok()) return 1;
      st->inside.fetch_add(1);
      for (int w = 0; w < 5000 && st->inside.load() < kReaders; ++w) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      bool all = st->inside.load() == kReaders;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return l.release(Mode::shared).ok() && all ? 0 : 2;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k) == 0);
  expect_consistent(*t);
}

TEST_CASE("shared: a writer is excluded while any reader holds, and gets in after") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("catalog", &l).ok());
  Pipe go;
  pid_t reader = testing::spawn_releasing_holder(tmp.table(), "catalog", Mode::shared, go);
  CHECK(l.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(100))).status.code() == Code::timed_out);
  CHECK(l.try_acquire(Mode::shared).status.ok());  // readers still share (no writer waiting now)
  CHECK(l.release(Mode::shared).ok());
  go.send();
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(r.status.ok());
  CHECK(wait_child(reader) == 0);
  std::vector<LockInfo> ls;
  REQUIRE(t->list(&ls).ok());
  CHECK(ls[0].state == LockState::held);
  CHECK(l.release().ok());
}

TEST_CASE("shared: a writer is not starved by a stream of overlapping readers") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  SharedState* st = shared_state();
  std::vector<pid_t> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(spawn([&, i] {
      std::unique_ptr<Table> tt;
      Lock rl = child_lock(tmp.table(), "hot", &tt);
      std::this_thread::sleep_for(std::chrono::milliseconds(7 * i));  // staggered: always someone inside
      while (!st->stop.load()) {
        if (!rl.acquire(Mode::shared, Deadline::after(std::chrono::seconds(10))).held()) return 1;
        if (st->writer_inside.load() != 0) st->violations.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (!rl.release(Mode::shared).ok()) return 2;
      }
      return 0;
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Lock w;
  REQUIRE(t->lookup("hot", &w).ok());
  for (int round = 0; round < 5; ++round) {
    double start = testing::now_ms();
    AcquireResult r = w.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(5)));
    REQUIRE(r.status.ok());
    CHECK(testing::now_ms() - start < 2000);  // readers drain, none newly admitted
    st->writer_inside = 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    st->writer_inside = 0;
    REQUIRE(w.release().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  st->stop = true;
  for (pid_t r : readers) CHECK(wait_child(r) == 0);
  CHECK(st->violations.load() == 0);
  expect_consistent(*t);
}

// The race behind the starvation seen with chains of `locktable run --shared`
// (each reader starting the next while it holds): when the last reader left,
// the lock became plain FREE and the waiting writer raced the readers that
// had queued behind it. A waiting writer must get the lock first. The writer
// is stopped (SIGSTOP) at the moment the last reader leaves, so a newer
// reader that could slip in would do so for certain.
TEST_CASE("shared: when the last reader leaves, a waiting writer gets the lock before readers that came after it") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  SharedState* st = shared_state();
  Pipe holding, release_first, writer_in, second_in;
  pid_t first = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "hot", &tt);
    if (!rl.acquire(Mode::shared).status.ok()) return 1;
    holding.send();
    if (release_first.receive() != '.') return 2;
    return rl.release(Mode::shared).ok() ? 0 : 3;
  });
  REQUIRE(holding.receive() == '.');
  pid_t writer = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock wl = child_lock(tmp.table(), "hot", &tt);
    if (!wl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20))).status.ok()) return 1;
    st->writer_inside = 1;
    writer_in.send();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    st->writer_inside = 0;
    return wl.release().ok() ? 0 : 2;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // the writer waits, keeping new readers out
  pid_t second = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "hot", &tt);
    if (!rl.acquire(Mode::shared, Deadline::after(std::chrono::seconds(20))).status.ok()) return 1;
    if (st->writer_inside.load() != 0) st->violations.fetch_add(1);
    second_in.send();
    return rl.release(Mode::shared).ok() ? 0 : 2;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  CHECK(second_in.receive(0) == 0);  // kept out by the waiting writer
  REQUIRE(::kill(writer, SIGSTOP) == 0);
  release_first.send();
  CHECK(wait_child(first) == 0);
  // The lock is free, the writer is stopped: a newer reader must still stay out.
  CHECK(second_in.receive(300) == 0);
  REQUIRE(::kill(writer, SIGCONT) == 0);
  CHECK(writer_in.receive(5000) == '.');
  CHECK(second_in.receive(5000) == '.');
  CHECK(wait_child(writer) == 0);
  CHECK(wait_child(second) == 0);
  CHECK(st->violations.load() == 0);
  expect_consistent(*t);
}

// A writer that dies while it waits must not keep readers out for ever.
TEST_CASE("shared: a writer killed while it waits does not keep readers out") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Pipe holding, release_first, second_in;
  pid_t first = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "hot", &tt);
    if (!rl.acquire(Mode::shared).status.ok()) return 1;
    holding.send();
    if (release_first.receive() != '.') return 2;
    return rl.release(Mode::shared).ok() ? 0 : 3;
  });
  REQUIRE(holding.receive() == '.');
  pid_t writer = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock wl = child_lock(tmp.table(), "hot", &tt);
    (void)wl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
    return 0;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  pid_t second = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "hot", &tt);
    if (!rl.acquire(Mode::shared, Deadline::after(std::chrono::seconds(20))).status.ok()) return 1;
    second_in.send();
    return rl.release(Mode::shared).ok() ? 0 : 2;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ::kill(writer, SIGKILL);
  CHECK(wait_child(writer) == 128 + SIGKILL);
  release_first.send();
  CHECK(wait_child(first) == 0);
  double start = testing::now_ms();
  CHECK(second_in.receive(5000) == '.');
  CHECK(testing::now_ms() - start < 1000);
  CHECK(wait_child(second) == 0);
  expect_consistent(*t);
}

TEST_CASE("shared: SIGKILL of readers frees the lock for a writer, which is told abandoned") {
  int victims = GENERATE(1, 3);
  TempDir tmp;
  auto t = open_table(tmp.table());
  std::vector<pid_t> readers;
  for (int i = 0; i < victims; ++i) readers.push_back(spawn_holder(tmp.table(), "catalog", Mode::shared));
  for (pid_t r : readers) ::kill(r, SIGKILL);
  for (pid_t r : readers) CHECK(wait_child(r) == 128 + SIGKILL);
  Lock w;
  REQUIRE(t->lookup("catalog", &w).ok());
  double start = testing::now_ms();
  AcquireResult r = w.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(r.abandoned());
  bool named = false;
  for (pid_t p : readers) named |= r.dead_owner.pid == uint32_t(p);
  CHECK(named);
  CHECK(testing::now_ms() - start < 1000);
  CHECK(w.mark_consistent().ok());
  CHECK(w.release().ok());
  expect_consistent(*t);
}

TEST_CASE("shared: SIGKILL of a writer frees the lock for waiting readers, told abandoned") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Pipe results;
  pid_t writer = spawn_holder(tmp.table(), "catalog");
  std::vector<pid_t> readers;
  for (int i = 0; i < 2; ++i) {
    readers.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      Lock rl = child_lock(tmp.table(), "catalog", &tt);
      AcquireResult r = rl.acquire(Mode::shared, Deadline::after(std::chrono::seconds(10)));
      if (!r.held()) return 1;
      results.send(r.abandoned() && r.dead_owner.pid == uint32_t(writer) ? 'A' : 'O');
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return rl.release(Mode::shared).ok() ? 0 : 2;
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ::kill(writer, SIGKILL);
  CHECK(wait_child(writer) == 128 + SIGKILL);
  int abandoned = 0;
  for (int i = 0; i < 2; ++i) abandoned += results.receive() == 'A';
  for (pid_t r : readers) CHECK(wait_child(r) == 0);
  CHECK(abandoned >= 1);
  // Readers cannot repair; the next writer is still told.
  Lock w;
  REQUIRE(t->lookup("catalog", &w).ok());
  AcquireResult r = w.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(r.abandoned());
  CHECK(w.mark_consistent().ok());
  CHECK(w.release().ok());
  CHECK(w.acquire().status.ok());
  CHECK(w.release().ok());
}

TEST_CASE("shared: misuse is an error, never a silent upgrade or a deadlock") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("m", &l).ok());
  REQUIRE(l.acquire(Mode::shared).status.ok());
  CHECK(l.acquire(Mode::shared).status.code() == Code::already_held);
  CHECK(l.try_acquire(Mode::exclusive).status.code() == Code::already_held);
  CHECK(l.acquire(Mode::exclusive).status.code() == Code::already_held);  // blocking: no self-deadlock
  CHECK(l.release(Mode::exclusive).code() == Code::not_owner);
  CHECK(l.release(Mode::shared).ok());
  CHECK(l.release(Mode::shared).code() == Code::not_owner);
  REQUIRE(l.acquire().status.ok());
  CHECK(l.acquire(Mode::shared).status.code() == Code::already_held);
  CHECK(l.release(Mode::shared).code() == Code::not_owner);
  CHECK(l.release().ok());
  CHECK(t->remove("m").ok());
}

TEST_CASE("shared: a reader killed at any step of joining or leaving leaves a consistent count") {
  const char* point = GENERATE("join:after_intent", "join:after_add", "leave:after_intent", "leave:after_add",
                               "leave:before_free");
  CAPTURE(point);
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("c", &l).ok());
  // Another reader holds it throughout, so the count matters.
  Pipe held, done;
  pid_t steady = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "c", &tt);
    if (!rl.acquire(Mode::shared).status.ok()) return 1;
    held.send();
    if (done.receive(60000) != '.') return 2;
    return rl.release(Mode::shared).ok() ? 0 : 3;
  });
  REQUIRE(held.receive() == '.');
  pid_t victim = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "c", &tt);
    detail::arm_crash_point(point);
    if (!rl.acquire(Mode::shared).status.ok()) return 1;
    (void)rl.release(Mode::shared);
    return 4;  // a "leave" point should have killed us
  });
  CHECK(wait_child(victim) == 128 + SIGKILL);

  // The steady reader is still in: a writer must wait for it, then get in.
  CHECK(l.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(200))).status.code() ==
        Code::timed_out);
  std::vector<Recovery> actions;
  REQUIRE(t->recover(false, &actions).ok());
  expect_consistent(*t);
  done.send();
  CHECK(wait_child(steady) == 0);
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(r.held());
  // Told abandoned exactly when the dead reader had been counted in.
  bool was_in = std::string(point) != "join:after_intent" && std::string(point) != "leave:after_add" &&
                std::string(point) != "leave:before_free";
  CHECK(r.abandoned() == was_in);
  (void)l.mark_consistent();
  CHECK(l.release().ok());
  expect_consistent(*t);
}

TEST_CASE("shared: a reader thread that exits holding leaves the lock abandoned to the next writer") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("c", &l).ok());
  uint32_t dead_tid = 0;
  bool joined = false;
  std::thread([&] {  // Catch2 assertions are not thread-safe: check after join
    joined = l.acquire(Mode::shared).status.ok();
    dead_tid = uint32_t(::gettid());
  }).join();
  REQUIRE(joined);
  CHECK(l.try_acquire(Mode::shared).status.ok());  // a live reader shares with the dead one's leftover
  CHECK(l.release(Mode::shared).ok());
  CHECK(testing::expect_takeover(l, ::getpid()).tid == dead_tid);
  CHECK(l.mark_consistent().ok());
  CHECK(l.release().ok());
  expect_consistent(*t);
}

TEST_CASE("shared: a reader that execs a new program while holding leaves the lock abandoned to the next writer") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  pid_t reader = testing::spawn_exec_holder(tmp.table(), "c", Mode::shared);
  Lock l;
  REQUIRE(t->lookup("c", &l).ok());
  testing::expect_takeover(l, reader);
  CHECK(::kill(reader, 0) == 0);  // still running, as sleep: only the kernel's mark tells
  CHECK(l.mark_consistent().ok());
  CHECK(l.release().ok());
  ::kill(reader, SIGKILL);
  CHECK(wait_child(reader) == 128 + SIGKILL);
  expect_consistent(*t);
}

TEST_CASE("shared: a stopped reader (SIGSTOP) is alive: a writer times out, recover removes nothing, SIGCONT and it leaves") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("c", &l).ok());
  Pipe leave;
  pid_t reader = testing::spawn_releasing_holder(tmp.table(), "c", Mode::shared, leave);
  REQUIRE(::kill(reader, SIGSTOP) == 0);
  AcquireResult w = l.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(400)));
  CHECK(w.status.code() == Code::timed_out);
  std::vector<Recovery> actions;
  REQUIRE(t->recover(false, &actions).ok());
  CHECK(actions.empty());
  CHECK(l.try_acquire(Mode::shared).status.ok());  // readers still share with it
  CHECK(l.release(Mode::shared).ok());
  leave.send();
  REQUIRE(::kill(reader, SIGCONT) == 0);
  AcquireResult after = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(after.status.ok());  // left by a live reader: not abandoned
  CHECK(wait_child(reader) == 0);
  CHECK(l.release().ok());
  expect_consistent(*t);
}

TEST_CASE("shared: dead readers are found by a waiting writer without recover") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  pid_t victim = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock rl = child_lock(tmp.table(), "c", &tt);
    detail::arm_crash_point("join:after_add");
    (void)rl.acquire(Mode::shared);
    return 4;
  });
  CHECK(wait_child(victim) == 128 + SIGKILL);
  Lock l;
  REQUIRE(t->lookup("c", &l).ok());
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  CHECK(r.abandoned());
  CHECK(r.dead_owner.pid == uint32_t(victim));
  CHECK(l.release().ok());
}

TEST_CASE("shared: running out of reader records grows the table, and a full table is a clear error") {
  TempDir tmp;
  Options o;
  o.initial_slots = 8;
  o.max_slots = 8;  // one extent: 64 reader records, no growth
  auto t = open_table(tmp.table(), o);
  std::vector<Lock> locks(70);
  int held = 0;
  Code last = Code::ok;
  for (size_t i = 0; i < 8; ++i) REQUIRE(t->lookup("l" + std::to_string(i), &locks[i]).ok());
  // One thread can hold each lock shared once: hold 8 locks from 8 threads each = 64 records.
  std::vector<std::thread> threads;
  std::atomic<int> got{0}, capacity_errors{0};
  std::atomic<bool> release{false};
  for (int th = 0; th < 9; ++th) {
    threads.emplace_back([&] {
      std::vector<Lock*> mine;
      for (size_t i = 0; i < 8; ++i) {
        AcquireResult r = locks[i].acquire(Mode::shared, Deadline::now());
        if (r.held()) {
          got++;
          mine.push_back(&locks[i]);
        } else if (r.status.code() == Code::capacity) {
          capacity_errors++;
        }
      }
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      for (Lock* l : mine) (void)l->release(Mode::shared);
    });
  }
  while (got + capacity_errors < 72) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  release = true;
  for (auto& th : threads) th.join();
  held = got;
  last = capacity_errors > 0 ? Code::capacity : Code::ok;
  CHECK(held == 64);
  CHECK(last == Code::capacity);
  expect_consistent(*t);
}

namespace {

LockCounters counters_of(Table& t, const std::string& name) {
  std::vector<LockInfo> locks;
  REQUIRE(t.list(&locks).ok());
  for (const LockInfo& l : locks) {
    if (l.name == name) return l.counters;
  }
  FAIL("no lock " << name);
  return {};
}

}  // namespace

TEST_CASE("shared: every shared acquisition is counted, across processes, writers in between and a killed reader") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  constexpr int kProcs = 3, kRounds = 3000;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    kids.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      Lock l = child_lock(tmp.table(), "catalog", &tt);
      for (int i = 0; i < kRounds; ++i) {
        const Mode m = i % 10 == 9 ? Mode::exclusive : Mode::shared;  // writers move the joins out of the record
        if (!l.acquire(m).held() || !l.release(m).ok()) return 1;
      }
      return 0;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k) == 0);
  LockCounters c = counters_of(*t, "catalog");
  CHECK(c.shared_acquisitions == uint64_t{kProcs} * kRounds * 9 / 10);
  CHECK(c.exclusive_acquisitions == uint64_t{kProcs} * kRounds / 10);
  // A hold counts when it ends: a reader killed inside counts once, when the
  // next writer takes it out; the downgraded hold that follows, when it is released.
  pid_t reader = spawn_holder(tmp.table(), "catalog", Mode::shared);
  ::kill(reader, SIGKILL);
  CHECK(wait_child(reader) == 128 + SIGKILL);
  CHECK(counters_of(*t, "catalog").shared_acquisitions == c.shared_acquisitions);
  Lock w;
  REQUIRE(t->lookup("catalog", &w).ok());
  REQUIRE(w.acquire().abandoned());
  CHECK(counters_of(*t, "catalog").shared_acquisitions == c.shared_acquisitions + 1);
  REQUIRE(w.downgrade().ok());
  CHECK(counters_of(*t, "catalog").shared_acquisitions == c.shared_acquisitions + 1);
  CHECK(w.release(Mode::shared).ok());
  CHECK(counters_of(*t, "catalog").shared_acquisitions == c.shared_acquisitions + 2);
  CHECK(counters_of(*t, "catalog").exclusive_acquisitions == c.exclusive_acquisitions + 1);
  expect_consistent(*t);
}

TEST_CASE("shared: the shared count carries past 2^32 ended holds") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("catalog", &l).ok());
  REQUIRE(l.acquire(Mode::shared).held());
  REQUIRE(l.release(Mode::shared).ok());
  {
    // Forge the readers word as after 2^32 - 3 more ended holds.
    testing::RawTable raw(tmp.table());
    format::Slot* s = raw.slot(l.slot());
    REQUIRE(format::readers_ended(s->readers) == 1);
    s->readers = format::make_readers_word(0, 0xffffffffu - 1, format::readers_backouts(s->readers));
  }
  for (int i = 0; i < 3; ++i) {
    REQUIRE(l.acquire(Mode::shared).held());
    REQUIRE(l.release(Mode::shared).ok());
  }
  CHECK(counters_of(*t, "catalog").shared_acquisitions == (uint64_t{1} << 32) + 1);
  REQUIRE(l.acquire().held());
  REQUIRE(l.release().ok());
  CHECK(counters_of(*t, "catalog").shared_acquisitions == (uint64_t{1} << 32) + 1);
  testing::RawTable raw(tmp.table());
  CHECK(format::readers_ended(raw.slot(l.slot())->readers) == 1);
  CHECK(raw.slot(l.slot())->shared_carry == (uint64_t{1} << 32));
}
