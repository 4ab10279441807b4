// History: events in order with the right fields; half-written entries never
// become garbage; concurrent drainers store each event once; overflow,
// retention, levels, corrupt records, a drainer killed before committing.
#include <lmdb.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <mutex>
#include <set>
#include <thread>

#include "crash_point.h"
#include "helpers.h"
#include "lmdb_records.h"

using namespace locktable;
using testing::child_lock;
using testing::open_table;
using testing::spawn;
using testing::spawn_holder;
using testing::TempDir;
using testing::wait_child;

namespace {

std::vector<Event> all_events(Table& t, HistoryQuery q = {}) {
  std::vector<Event> ev;
  Status s = t.history(q, &ev);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return ev;
}

uint64_t lost_in(const std::vector<Event>& ev) {
  uint64_t n = 0;
  for (const Event& e : ev) n += e.kind == EventKind::lost ? e.count : 0;
  return n;
}

// Every event appended is accounted for exactly once: by its own record, or
// inside a `lost` event's count (repeats of one recovery are dropped: the
// tests that use this have none). At level ring nothing is drained, and the
// history read from the ring accounts for every event all the same.
void expect_accounted(Table& t) {
  std::vector<Event> ev = all_events(t);  // drains first
  TableStats st;
  REQUIRE(t.stats(&st).ok());
  uint64_t covered = 0;
  std::set<uint64_t> seqs;
  for (const Event& e : ev) {
    CHECK(seqs.insert(e.seq).second);
    covered += e.kind == EventKind::lost ? e.count : 1;
  }
  CHECK(covered == st.ring_appended);
  if (st.history_level == HistoryLevel::persisted) CHECK(st.ring_accounted == st.ring_appended);
}

const char* level_name(HistoryLevel level) { return level == HistoryLevel::ring ? "ring" : "persisted"; }

// Runs a history query in a thread of its own and gives it `limit` to finish:
// a drain that stalls fails the test instead of hanging it (the thread is
// left behind).
std::optional<std::vector<Event>> history_within(Table& t, HistoryQuery q, std::chrono::seconds limit) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status;
    std::vector<Event> events;
  };
  auto shared = std::make_shared<Shared>();
  std::thread([shared, &t, q] {
    std::vector<Event> ev;
    Status s = t.history(q, &ev);
    std::lock_guard<std::mutex> g(shared->mu);
    shared->status = s;
    shared->events = std::move(ev);
    shared->done = true;
    shared->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> g(shared->mu);
  if (!shared->cv.wait_for(g, limit, [&] { return shared->done; })) return std::nullopt;
  INFO(shared->status.to_string());
  REQUIRE(shared->status.ok());
  return shared->events;
}

}  // namespace

TEST_CASE("history: a scripted scenario comes out in order with the right fields") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  uint32_t me = uint32_t(::getpid());
  Lock a;
  REQUIRE(t->lookup("orders", &a).ok());
  REQUIRE(a.acquire().status.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  REQUIRE(a.release().ok());
  REQUIRE(a.acquire().status.ok());
  uint32_t waiter_tid = 0;
  std::thread([&] {
    waiter_tid = uint32_t(::gettid());
    CHECK(a.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(40))).status.code() == Code::timed_out);
  }).join();
  REQUIRE(a.release().ok());
  REQUIRE(a.acquire(Mode::shared).status.ok());
  REQUIRE(a.release(Mode::shared).ok());
  pid_t kid = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = child_lock(tmp.table(), "orders", &tt);
    if (!l.acquire().status.ok()) return 1;
    ::raise(SIGKILL);
    return 0;
  });
  REQUIRE(wait_child(kid) == 128 + SIGKILL);
  REQUIRE(a.acquire().abandoned());
  REQUIRE(a.mark_consistent().ok());
  REQUIRE(a.release().ok());
  REQUIRE(t->remove("orders").ok());

  std::vector<Event> ev = all_events(*t);
  std::vector<EventKind> kinds;
  for (const Event& e : ev) kinds.push_back(e.kind);
  using K = EventKind;
  std::vector<EventKind> expected{K::created,  K::acquired, K::released, K::acquired, K::timeout,
                                  K::released, K::acquired, K::released, K::acquired, K::recovered,
                                  K::acquired, K::released, K::removed};
  REQUIRE(kinds == expected);
  for (size_t i = 0; i < ev.size(); ++i) {
    CHECK(ev[i].name == "orders");
    CHECK(ev[i].slot == a.slot());
    if (i > 0) CHECK(ev[i].seq > ev[i - 1].seq);
    CHECK(ev[i].time_ns > 0);
  }
  CHECK(ev[0].pid == me);
  CHECK(ev[0].tid == uint32_t(::gettid()));
  CHECK(ev[2].hold_ns >= 20'000'000);  // held ~30 ms (coarse clock)
  CHECK(ev[4].tid == waiter_tid);
  CHECK(ev[4].wait_ns >= 30'000'000);
  CHECK(ev[6].mode == Mode::shared);
  CHECK(ev[8].pid == uint32_t(kid));
  CHECK(ev[9].dead_owner.pid == uint32_t(kid));
  CHECK(ev[9].dead_owner.tid == uint32_t(kid));
  CHECK(ev[9].dead_owner.start_time != 0);
  CHECK(ev[10].abandoned);
  CHECK_FALSE(ev[11].abandoned);  // marked consistent before release
  CHECK_FALSE(ev[1].abandoned);

  HistoryQuery q;
  q.kind = EventKind::acquired;
  CHECK(all_events(*t, q).size() == 5);
  q = {};
  q.pid = uint32_t(kid);
  CHECK(all_events(*t, q).size() == 1);
  q = {};
  q.limit = 3;
  q.newest_first = true;
  std::vector<Event> newest = all_events(*t, q);
  REQUIRE(newest.size() == 3);
  CHECK(newest[0].kind == EventKind::removed);
  q = {};
  q.name = "orders";
  CHECK(all_events(*t, q).size() == ev.size());
  q.name = "other";
  CHECK(all_events(*t, q).empty());
  expect_accounted(*t);
}

TEST_CASE("history: a limit gives the newest matching events, the same as the whole history's tail") {
  // A limit reads the stored records backwards, and at level ring the ring's
  // events come first: every filter must give the tail of the full answer.
  const HistoryLevel level = GENERATE(HistoryLevel::persisted, HistoryLevel::ring);
  INFO("history level " << level_name(level));
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a, b;
  REQUIRE(t->lookup("a", &a).ok());
  REQUIRE(t->lookup("b", &b).ok());
  auto rounds = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Lock& l = i % 3 == 0 ? b : a;
      REQUIRE(l.acquire(i % 2 ? Mode::shared : Mode::exclusive).held());
      REQUIRE(l.release(i % 2 ? Mode::shared : Mode::exclusive).ok());
    }
  };
  rounds(40);  // stored
  REQUIRE(t->set_history_level(level).ok());
  rounds(20);  // stored, or (level ring) in the ring only
  std::vector<HistoryQuery> queries(6);
  queries[1].name = "b";
  queries[2].kind = EventKind::released;
  queries[3].after_seq = 70;
  queries[4].name = "a";
  queries[4].kind = EventKind::acquired;
  queries[5].name = "nobody";
  for (size_t k = 0; k < queries.size(); ++k) {
    const std::vector<Event> all = all_events(*t, queries[k]);
    for (size_t limit : {size_t{1}, size_t{5}, size_t{30}, size_t{1000}}) {
      INFO("query " << k << ", limit " << limit);
      HistoryQuery q = queries[k];
      q.limit = limit;
      std::vector<Event> got = all_events(*t, q);
      const size_t n = std::min(limit, all.size());
      REQUIRE(got.size() == n);
      for (size_t i = 0; i < n; ++i) CHECK(got[i].seq == all[all.size() - n + i].seq);
      q.newest_first = true;
      got = all_events(*t, q);
      REQUIRE(got.size() == n);
      if (n > 0) CHECK(got.front().seq == all.back().seq);
    }
  }
}

TEST_CASE("history: a writer killed in the middle of an append leaves no event and loses no other") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("x", &a).ok());
  REQUIRE(a.acquire().status.ok());
  pid_t kid = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = child_lock(tmp.table(), "x", &tt);
    detail::arm_crash_point("append:before_complete");
    (void)l.try_acquire();  // times out: its `timeout` event dies half-written
    return 1;
  });
  REQUIRE(wait_child(kid) == 128 + SIGKILL);
  REQUIRE(a.release().ok());
  REQUIRE(a.acquire().status.ok());  // complete events after the broken one
  REQUIRE(a.release().ok());
  std::vector<Event> ev = all_events(*t);
  std::vector<EventKind> kinds;
  for (const Event& e : ev) kinds.push_back(e.kind);
  using K = EventKind;
  CHECK(kinds == std::vector<EventKind>{K::created, K::acquired, K::released, K::acquired, K::released});
  CHECK(lost_in(ev) == 0);
  expect_accounted(*t);
  std::vector<std::string> problems;
  REQUIRE(t->check(&problems).ok());
  CHECK(problems.empty());
}

TEST_CASE("history: writers SIGKILLed at random moments leave no garbage event") {
  TempDir tmp;
  Options o;
  o.ring_entries = 1024;
  auto t = open_table(tmp.table(), o);
  Lock a;
  REQUIRE(t->lookup("busy", &a).ok());
  for (int round = 0; round < 25; ++round) {
    pid_t kid = spawn([&] {
      std::unique_ptr<Table> tt;
      Lock l = child_lock(tmp.table(), "busy", &tt);
      for (;;) {
        if (!l.acquire().status.ok()) return 1;
        (void)l.release();
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(500 + 397 * round % 3000));
    ::kill(kid, SIGKILL);
    wait_child(kid);
    if (round % 5 == 4) {
      uint64_t n = 0;
      REQUIRE(t->drain_history(&n).ok());
    }
  }
  std::vector<Event> ev = all_events(*t);
  std::vector<std::string> problems;
  REQUIRE(t->check(&problems).ok());
  CHECK(problems.empty());
  for (const Event& e : ev) {
    bool known = e.kind == EventKind::created || e.kind == EventKind::acquired || e.kind == EventKind::released ||
                 e.kind == EventKind::recovered || e.kind == EventKind::lost;
    CHECK(known);
    if (e.kind != EventKind::lost) CHECK(e.name == "busy");
  }
  expect_accounted(*t);
}

TEST_CASE("history: two concurrent drainers store every event exactly once") {
  TempDir tmp;
  Options o;
  o.ring_entries = 1u << 20;  // segments of 4094 events: the producer's 4000 never lap
  auto t = open_table(tmp.table(), o);
  constexpr int kPairs = 2000;
  pid_t producer = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = child_lock(tmp.table(), "p", &tt);
    for (int i = 0; i < kPairs; ++i) {
      if (!l.acquire().status.ok() || !l.release().ok()) return 1;
    }
    return 0;
  });
  std::vector<pid_t> drainers;
  for (int d = 0; d < 2; ++d) {
    drainers.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
      for (int i = 0; i < 300; ++i) {
        uint64_t n = 0;
        if (!tt->drain_history(&n).ok()) return 2;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return 0;
    }));
  }
  CHECK(wait_child(producer) == 0);
  for (pid_t d : drainers) CHECK(wait_child(d) == 0);
  std::vector<Event> ev = all_events(*t);
  CHECK(lost_in(ev) == 0);
  size_t acquired = 0, released = 0;
  for (const Event& e : ev) {
    acquired += e.kind == EventKind::acquired;
    released += e.kind == EventKind::released;
  }
  CHECK(acquired == kPairs);
  CHECK(released == kPairs);
  expect_accounted(*t);
}

TEST_CASE("history: a drainer killed before committing loses nothing") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("k", &a).ok());
  for (int i = 0; i < 10; ++i) {
    REQUIRE(a.acquire().status.ok());
    REQUIRE(a.release().ok());
  }
  pid_t kid = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
    detail::arm_crash_point("drain:before_commit");
    uint64_t n = 0;
    (void)tt->drain_history(&n);
    return 2;
  });
  CHECK(wait_child(kid) == 128 + SIGKILL);
  std::vector<Event> ev = all_events(*t);
  CHECK(ev.size() == 21);
  CHECK(lost_in(ev) == 0);
  expect_accounted(*t);
}

TEST_CASE("history: ring overflow goes on locking and counts what was dropped") {
  const HistoryLevel level = GENERATE(HistoryLevel::persisted, HistoryLevel::ring);
  INFO("history level " << level_name(level));
  TempDir tmp;
  Options o;
  o.ring_entries = 64;
  o.history = level;
  auto t = open_table(tmp.table(), o);
  Lock a;
  REQUIRE(t->lookup("o", &a).ok());  // 1 event
  for (int i = 0; i < 500; ++i) {    // 1000 events, never drained
    REQUIRE(a.acquire().status.ok());
    REQUIRE(a.release().ok());
  }
  // One thread's segment holds 14 events (a 64-unit ring: 4 segments of 16
  // units, 2 of them the header): one `lost` event, then the 14 it still held.
  std::vector<Event> ev = all_events(*t);
  REQUIRE(ev.size() == 15);
  CHECK(ev[0].kind == EventKind::lost);
  CHECK(ev[0].count == 1001 - 14);
  CHECK(ev[0].seq == 1);
  for (size_t i = 1; i < ev.size(); ++i) CHECK(ev[i].kind == (i % 2 == 1 ? EventKind::acquired : EventKind::released));
  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.history_lost == 1001 - 14);
  CHECK(st.history_records == (level == HistoryLevel::ring ? 0 : 15));
  expect_accounted(*t);
}

TEST_CASE("history: drains racing a tight-loop writer account for every ticket once") {
  // Drains race a process appending far faster than LMDB stores: each pass
  // ends, the drainer is lapped over and over (it skips each overwritten
  // stretch in one step, counting it lost), and every ticket is still
  // accounted for exactly once: stored, or inside one `lost` run.
  TempDir tmp;
  Options o;
  o.ring_entries = 1024;
  o.retention_count = 0;
  auto t = open_table(tmp.table(), o);
  Lock a;
  REQUIRE(t->lookup("busy", &a).ok());
  const std::string dir = tmp.table();
  testing::Pipe started;
  pid_t child = spawn([&] {
    std::unique_ptr<Table> keep;
    Lock l = child_lock(dir, "busy", &keep);
    for (uint64_t i = 0;; ++i) {
      if (!l.acquire().status.ok() || !l.release().ok()) return 1;
      if (i == 10000) started.send();
    }
  });
  REQUIRE(started.receive() == '.');
  for (int pass = 0; pass < 5; ++pass) {
    auto drain = std::async(std::launch::async, [&] {
      uint64_t n = 0;
      return t->drain_history(&n);
    });
    bool ended = drain.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
    if (!ended) ::kill(child, SIGKILL);  // stops the writer, so a drain that never ended returns
    REQUIRE(ended);
    REQUIRE(drain.get().ok());
  }
  ::kill(child, SIGKILL);
  CHECK(wait_child(child) == 128 + SIGKILL);
  expect_accounted(*t);  // every ticket, drained or lost, exactly once
}

TEST_CASE("history: a retention age longer than the clock's past keeps every record; a negative one is refused") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("a", &a).ok());  // 1 event
  size_t appended = 1;
  // 2^55 s: its nanoseconds wrap to 0 in 64 bits, which made the cutoff now.
  for (int64_t age : {int64_t{1} << 55, int64_t{1} << 40, INT64_MAX}) {
    INFO("age " << age << " s");
    REQUIRE(t->set_retention(0, std::chrono::seconds(age)).ok());
    REQUIRE(a.acquire().held());
    REQUIRE(a.release().ok());
    appended += 2;
    CHECK(all_events(*t).size() == appended);  // drained under that retention: nothing went
  }
  Status s = t->set_retention(0, std::chrono::seconds(-1));
  CHECK(s.code() == Code::invalid_argument);
  CHECK(s.message().find(tmp.table()) != std::string::npos);
  TempDir other;
  Options o;
  o.retention_age = std::chrono::seconds(-5);
  std::unique_ptr<Table> refused;
  CHECK(Table::open(other.table(), o, &refused).code() == Code::invalid_argument);
  CHECK(!std::filesystem::exists(other.table()));
}

TEST_CASE("history: retention by count and by age, with the name index") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a, b;
  REQUIRE(t->lookup("a", &a).ok());
  REQUIRE(t->lookup("b", &b).ok());
  REQUIRE(t->set_retention(10, std::chrono::seconds(0)).ok());
  for (int i = 0; i < 20; ++i) {
    Lock& l = i % 2 ? a : b;
    REQUIRE(l.acquire().status.ok());
    REQUIRE(l.release().ok());
  }
  std::vector<Event> ev = all_events(*t);
  REQUIRE(ev.size() == 10);
  CHECK(ev.back().seq == 42);  // the newest are kept
  HistoryQuery q;
  q.name = "a";
  CHECK(all_events(*t, q).size() == 6);  // seq 33..42: a has 33,34,37,38,41,42; the index was pruned too
  std::vector<std::string> problems;
  REQUIRE(t->check(&problems).ok());
  CHECK(problems.empty());

  REQUIRE(t->set_retention(0, std::chrono::seconds(1)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  REQUIRE(a.acquire().status.ok());
  REQUIRE(a.release().ok());
  ev = all_events(*t);
  REQUIRE(ev.size() == 2);  // everything older than a second is gone
  CHECK(ev[0].kind == EventKind::acquired);
}

TEST_CASE("history: levels off, ring and persisted") {
  TempDir tmp;
  Options o;
  o.history = HistoryLevel::off;
  auto t = open_table(tmp.table(), o);
  Lock a;
  REQUIRE(t->lookup("l", &a).ok());
  REQUIRE(a.acquire().status.ok());
  REQUIRE(a.release().ok());
  CHECK(all_events(*t).empty());
  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.ring_appended == 0);  // nothing appended at all

  REQUIRE(t->set_history_level(HistoryLevel::ring).ok());
  REQUIRE(a.acquire().status.ok());
  REQUIRE(a.release().ok());
  std::vector<Event> ev = all_events(*t);
  REQUIRE(ev.size() == 2);
  CHECK(ev[0].name == "l");
  REQUIRE(t->stats(&st).ok());
  CHECK(st.history_records == 0);  // read from the ring, not stored

  REQUIRE(t->set_history_level(HistoryLevel::persisted).ok());
  REQUIRE(a.acquire().status.ok());
  REQUIRE(a.release().ok());
  ev = all_events(*t);
  REQUIRE(t->stats(&st).ok());
  CHECK(st.history_records == 4);  // the ring-only events are drained too once persisted
  CHECK(ev.size() == 4);
}

TEST_CASE("history: a drain interval of milliseconds::max() drains once in a century, not without pause") {
  TempDir tmp;
  Options o;
  o.drain_interval = std::chrono::milliseconds::max();
  o.deadlock_timeout = std::chrono::milliseconds::max();
  auto t = open_table(tmp.table(), o);
  Lock a;
  REQUIRE(t->lookup("slow", &a).ok());
  REQUIRE(a.acquire().held());
  REQUIRE(a.release().ok());
  auto cpu_s = [] {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  const double before = cpu_s();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(cpu_s() - before < 0.1);  // the drainer sleeps (it spun: 0.5 s of CPU in 0.5 s)
  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.history_records == 0);  // nothing drained yet
}

TEST_CASE("history: the background drainer empties the ring without being asked") {
  TempDir tmp;
  Options o;
  o.drain_interval = std::chrono::milliseconds(10);
  auto t = open_table(tmp.table(), o);
  Lock a;
  REQUIRE(t->lookup("bg", &a).ok());
  for (int i = 0; i < 100; ++i) {
    REQUIRE(a.acquire().status.ok());
    REQUIRE(a.release().ok());
  }
  TableStats st;
  for (int i = 0; i < 500; ++i) {
    REQUIRE(t->stats(&st).ok());
    if (st.ring_accounted == st.ring_appended) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(st.ring_accounted == st.ring_appended);
  CHECK(st.history_records == 201);
}

TEST_CASE("history: a corrupt record is an error naming its sequence number") {
  TempDir tmp;
  {
    auto t = open_table(tmp.table());
    Lock a;
    REQUIRE(t->lookup("c", &a).ok());
    REQUIRE(a.acquire().status.ok());
    REQUIRE(a.release().ok());
    uint64_t n = 0;
    REQUIRE(t->drain_history(&n).ok());
  }
  MDB_env* env;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 8);
  REQUIRE(mdb_env_open(env, tmp.table().c_str(), 0, 0660) == 0);
  MDB_txn* txn;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi hist;
  REQUIRE(mdb_dbi_open(txn, "history", 0, &hist) == 0);
  std::string key = format::encode_u64_key(2);
  MDB_val k{key.size(), key.data()}, v{5, const_cast<char*>("junk!")};
  REQUIRE(mdb_put(txn, hist, &k, &v, 0) == 0);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);

  auto t = open_table(tmp.table());
  std::vector<Event> ev;
  Status s = t->history({}, &ev);
  CHECK(s.code() == Code::corrupt);
  CHECK(s.message().find("history record 2") != std::string::npos);
  CHECK(s.message().find("data.mdb") != std::string::npos);
  std::vector<std::string> problems;
  REQUIRE(t->check(&problems).ok());
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("history record 2") != std::string::npos);
}

TEST_CASE("history: a taker killed right after its takeover CAS still leaves the takeover, once") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock lock;
  REQUIRE(t->lookup("job", &lock).ok());

  // A takes the lock and is killed holding it.
  pid_t a = spawn_holder(tmp.table(), "job");
  kill(a, SIGKILL);
  REQUIRE(wait_child(a) == 128 + SIGKILL);

  // B takes it over and dies between its CAS and anything after it.
  pid_t b = spawn([&] {
    std::unique_ptr<Table> keep;
    Lock l = child_lock(tmp.table(), "job", &keep);
    detail::arm_crash_point("takeover:after_cas");
    (void)l.acquire();
    return 0;  // not reached
  });
  REQUIRE(wait_child(b) == 128 + SIGKILL);

  AcquireResult r = lock.acquire();
  REQUIRE(r.abandoned());
  CHECK(r.dead_owner.pid == uint32_t(b));
  REQUIRE(lock.mark_consistent().ok());
  REQUIRE(lock.release().ok());
  // Both a second recovery call and the next drain must not repeat either.
  std::vector<Recovery> actions;
  REQUIRE(t->recover(false, &actions).ok());

  std::map<uint32_t, int> recovered;  // dead pid -> events
  for (const Event& e : all_events(*t)) {
    if (e.kind == EventKind::recovered) ++recovered[e.dead_owner.pid];
  }
  CHECK(recovered[uint32_t(a)] == 1);  // recorded by B before its CAS
  CHECK(recovered[uint32_t(b)] == 1);  // recorded by this process before its CAS
  CHECK(recovered.size() == 2);
}

TEST_CASE("history: a thread pool that opens and closes the table again and again loses no event") {
  // Workers live across many opens of the table (a job runner opening it per
  // job). Each open's segments must be freed when it closes, or the segments
  // (and each thread's few segment references) run out and events are lost.
  TempDir tmp;
  Options o;
  o.ring_entries = 1u << 14;  // 8 segments: fewer than the threads times the cycles
  constexpr int kWorkers = 4, kCycles = 12, kPairs = 20;
  { open_table(tmp.table(), o); }
  std::mutex mu;
  std::condition_variable cv;
  int cycle = 0, done = 0;
  Table* current = nullptr;
  std::atomic<int> failures{0};  // Catch2 assertions are for the main thread only
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      for (int c = 1; c <= kCycles; ++c) {
        Table* t;
        {
          std::unique_lock<std::mutex> g(mu);
          cv.wait(g, [&] { return cycle == c; });
          t = current;
        }
        {
          Lock l;
          if (!t->lookup(fmt::format("job-{}", w), &l).ok()) ++failures;
          for (int i = 0; i < kPairs; ++i) {
            if (!l.acquire().status.ok() || !l.release().ok()) ++failures;
          }
        }
        std::lock_guard<std::mutex> g(mu);
        ++done;
        cv.notify_all();
      }
    });
  }
  for (int c = 1; c <= kCycles; ++c) {
    std::unique_ptr<Table> t = open_table(tmp.table());
    {
      std::lock_guard<std::mutex> g(mu);
      current = t.get();
      done = 0;
      cycle = c;
    }
    cv.notify_all();
    std::unique_lock<std::mutex> g(mu);
    cv.wait(g, [&] { return done == kWorkers; });
    g.unlock();
    t.reset();  // closes: the workers' segments of this open are freed
  }
  for (auto& th : workers) th.join();
  REQUIRE(failures == 0);
  auto t = open_table(tmp.table());
  std::vector<Event> ev = all_events(*t);
  CHECK(lost_in(ev) == 0);
  size_t acquired = 0;
  for (const Event& e : ev) acquired += e.kind == EventKind::acquired;
  CHECK(acquired == size_t{kWorkers} * kCycles * kPairs);
  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.ring_segments_in_use <= 1);  // this thread's, at most
  expect_accounted(*t);
}

TEST_CASE("history: threads beyond the segment count are counted lost, and the others' events kept") {
  const HistoryLevel level = GENERATE(HistoryLevel::persisted, HistoryLevel::ring);
  INFO("history level " << level_name(level));
  TempDir tmp;
  Options o;
  o.ring_entries = 64;  // 4 segments
  o.history = level;
  auto t = open_table(tmp.table(), o);  // this thread: the `created` events take a segment
  std::vector<Lock> locks(6);
  for (int i = 0; i < 6; ++i) REQUIRE(t->lookup(fmt::format("l{}", i), &locks[i]).ok());
  // Six threads at once, each holding its segment until all have appended.
  std::mutex mu;
  std::condition_variable cv;
  int appended = 0;
  std::atomic<int> failures{0};
  std::vector<std::thread> th;
  for (int i = 0; i < 6; ++i) {
    th.emplace_back([&, i] {
      if (!locks[i].acquire().status.ok() || !locks[i].release().ok()) ++failures;
      std::unique_lock<std::mutex> g(mu);
      ++appended;
      cv.notify_all();
      cv.wait(g, [&] { return appended == 6; });
    });
  }
  for (auto& x : th) x.join();
  REQUIRE(failures == 0);
  std::vector<Event> ev = all_events(*t);
  size_t kept = 0;
  for (const Event& e : ev) kept += e.kind == EventKind::acquired || e.kind == EventKind::released;
  // 3 segments were left for the 6 threads: 3 threads' 2 events each kept, 6 counted lost.
  CHECK(kept == 6);
  CHECK(lost_in(ev) == 6);
  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.history_lost == 6);
  expect_accounted(*t);
}

TEST_CASE("history: an exclusive try on a lock held shared is ordered after the hold it saw") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("config", &a).ok());
  REQUIRE(a.acquire(Mode::shared).status.ok());
  pid_t kid = spawn([&] { return a.try_acquire(Mode::exclusive).status.code() == Code::timed_out ? 0 : 1; });
  REQUIRE(wait_child(kid) == 0);
  REQUIRE(a.release(Mode::shared).ok());
  // The drain must finish (a timeout without the generation it saw used to
  // sort before everything and stall the merge for ever).
  HistoryQuery q;
  q.name = "config";
  auto drained = history_within(*t, q, std::chrono::seconds(10));
  REQUIRE(drained.has_value());
  const std::vector<Event>& ev = *drained;
  std::vector<EventKind> kinds;
  for (const Event& e : ev) kinds.push_back(e.kind);
  CHECK(kinds == std::vector<EventKind>{EventKind::created, EventKind::acquired, EventKind::timeout,
                                        EventKind::released});
}

TEST_CASE("history: a drain never stalls, even on events whose order contradicts itself") {
  // Events that a correct engine never writes: one thread's segment holding a
  // later generation of a lock before an earlier one. The merge cannot obey
  // both orders; the drain must still finish, keep the first and count the
  // other lost.
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("orders", &a).ok());
  REQUIRE(t->drain_history().ok());
  testing::RawTable raw(tmp.table());
  const uint32_t k = format::ring_segments(raw.header()->ring_entries) - 1;
  format::SegmentHeader* seg = raw.segment(k);
  auto* entries = reinterpret_cast<format::RingEntry*>(reinterpret_cast<char*>(seg) + sizeof(format::SegmentHeader));
  const uint32_t generations[2] = {7, 5};
  for (uint64_t i = 0; i < 2; ++i) {
    format::RingEntry& e = entries[i];
    std::memset(&e, 0, sizeof e);
    e.time_ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count()) + i;
    e.pid = 1;
    e.tid = 1;
    e.slot = a.slot();
    e.incarnation = 1;
    e.kind = format::kEventAcquired;
    e.generation = generations[i];
    e.stamp = 2 * i + 2;
  }
  seg->head = 2;
  HistoryQuery q;
  q.name = "orders";
  auto drained = history_within(*t, q, std::chrono::seconds(10));
  REQUIRE(drained.has_value());
  const std::vector<Event>& ev = *drained;
  REQUIRE(ev.size() == 2);  // created, then the generation-7 acquire
  CHECK(ev[1].kind == EventKind::acquired);
  CHECK(lost_in(all_events(*t)) == 1);
  expect_accounted(*t);
}

TEST_CASE("history: a thread that locks in two tables by turns records each event in its own table") {
  TempDir one, two;
  Options o;
  o.history = HistoryLevel::ring;
  auto ta = open_table(one.table(), o);
  auto tb = open_table(two.table(), o);
  Lock a, b;
  REQUIRE(ta->lookup("in-a", &a).ok());
  REQUIRE(tb->lookup("in-b", &b).ok());
  constexpr int kRounds = 50;
  for (int i = 0; i < kRounds; ++i) {
    // Exclusive and shared, so that every inline append path runs for both tables.
    for (Lock* l : {&a, &b}) {
      const Mode m = i % 2 ? Mode::shared : Mode::exclusive;
      REQUIRE(l->acquire(m).held());
      REQUIRE(l->release(m).ok());
    }
  }
  for (auto [t, name] : {std::pair{ta.get(), "in-a"}, std::pair{tb.get(), "in-b"}}) {
    size_t holds = 0;
    for (const Event& e : all_events(*t)) {
      CHECK(e.name == name);
      holds += e.kind == EventKind::acquired || e.kind == EventKind::released;
    }
    CHECK(holds == 2 * kRounds);
  }
}

TEST_CASE("history: a thread that locks in more tables than it keeps segments for loses no event in any") {
  constexpr int kTables = 7;  // beyond ThreadSelf's kSegmentRefs (4)
  constexpr int kRounds = 20;
  Options o;
  o.history = HistoryLevel::ring;
  o.ring_entries = 256;  // 4 segments of 62 entries: room for every event, not for a claim per visit
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<Table>> tables;
  std::vector<Lock> locks(kTables);
  for (int k = 0; k < kTables; ++k) {
    dirs.push_back(std::make_unique<TempDir>());
    tables.push_back(open_table(dirs.back()->table(), o));
    REQUIRE(tables.back()->lookup(fmt::format("in-{}", k), &locks[k]).ok());
  }
  for (int i = 0; i < kRounds; ++i) {
    for (Lock& l : locks) {
      const Mode m = i % 2 ? Mode::shared : Mode::exclusive;
      REQUIRE(l.acquire(m).held());
      REQUIRE(l.release(m).ok());
    }
  }
  for (int k = 0; k < kTables; ++k) {
    INFO("table " << k);
    std::vector<Event> ev = all_events(*tables[k]);
    size_t holds = 0;
    for (const Event& e : ev) holds += e.kind == EventKind::acquired || e.kind == EventKind::released;
    CHECK(holds == 2 * kRounds);
    CHECK(lost_in(ev) == 0);
    TableStats st;
    REQUIRE(tables[k]->stats(&st).ok());
    CHECK(st.history_lost == 0);
  }
}

// ORDER IN HISTORY (lock_protocol.cc): one lock's events, read back, replay
// as a valid sequence of holds: no exclusive hold beside any other hold, every
// release by a holder. Readers of several processes overlap, and writers
// drain them, so the order of joins, leaves and exclusive changes all counts.
TEST_CASE("history: one lock's events replay in the order of its holds, readers and writers together") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  // Each drains as it goes: a process that starts after another ended may
  // take over its ring segment, and would lap the events not drained yet.
  constexpr int kProcs = 3, kRounds = 600;
  testing::Pipe go;
  std::vector<pid_t> kids;
  for (int p = 0; p < kProcs; ++p) {
    kids.push_back(spawn([&, p] {
      Options o;
      o.drain_interval = std::chrono::milliseconds(5);
      std::unique_ptr<Table> tt;
      Lock l;
      if (!Table::open(tmp.table(), o, &tt).ok() || !tt->lookup("mixed", &l).ok()) return 4;
      if (go.receive() != '.') return 3;
      uint64_t x = 0x9E3779B97F4A7C15ull * uint64_t(p + 1);
      for (int i = 0; i < kRounds; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const Mode m = x % 4 == 0 ? Mode::exclusive : Mode::shared;
        if (!l.acquire(m).held()) return 1;
        // Holds that overlap (about 50 µs: the timer's slack), some of them spinning.
        if (x % 3 == 0) {
          for (uint64_t spin = x % 2000; spin > 0; --spin) asm volatile("" ::: "memory");
        } else {
          std::this_thread::sleep_for(std::chrono::microseconds(x % 20));
        }
        if (!l.release(m).ok()) return 2;
      }
      return 0;
    }));
  }
  for (int p = 0; p < kProcs; ++p) go.send();
  for (pid_t k : kids) REQUIRE(wait_child(k) == 0);
  REQUIRE(lost_in(all_events(*t)) == 0);  // (a lost event names no lock: not in the query below)
  HistoryQuery q;
  q.name = "mixed";
  std::vector<Event> ev = all_events(*t, q);
  using Thread = std::pair<uint32_t, uint32_t>;
  std::optional<Thread> writer;
  std::multiset<Thread> readers;
  size_t holds = 0;
  for (const Event& e : ev) {
    const Thread who{e.pid, e.tid};
    INFO("seq " << e.seq << " " << event_kind_name(e.kind) << (e.mode == Mode::shared ? " shared" : " exclusive")
                << " by " << e.pid << "/" << e.tid);
    if (e.kind == EventKind::acquired) {
      REQUIRE(!writer);
      if (e.mode == Mode::exclusive) {
        REQUIRE(readers.empty());
        writer = who;
      } else {
        readers.insert(who);
      }
      ++holds;
    } else if (e.kind == EventKind::released) {
      if (e.mode == Mode::exclusive) {
        REQUIRE(writer == who);
        writer.reset();
      } else {
        auto it = readers.find(who);
        REQUIRE(it != readers.end());
        readers.erase(it);
      }
    }
  }
  CHECK(holds == size_t{kProcs} * kRounds);
  CHECK(!writer);
  CHECK(readers.empty());
}

// A process that ends before any drain leaves its events in a segment it no
// longer claims: the next process must not take that one, and lap them, while
// a segment with nothing left to drain is free.
TEST_CASE("history: processes that run one after another, with no drain between, keep all their events") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  constexpr int kProcs = 3, kRounds = 700;  // 1,400 events each: two in one segment would lap
  for (int p = 0; p < kProcs; ++p) {
    pid_t kid = spawn([&] {
      std::unique_ptr<Table> tt;
      Lock l = child_lock(tmp.table(), "serial", &tt);
      for (int i = 0; i < kRounds; ++i) {
        if (!l.acquire().held() || !l.release().ok()) return 1;
      }
      return 0;
    });
    REQUIRE(wait_child(kid) == 0);
  }
  std::vector<Event> ev = all_events(*t);
  CHECK(lost_in(ev) == 0);
  size_t acquired = 0;
  for (const Event& e : ev) acquired += e.kind == EventKind::acquired;
  CHECK(acquired == size_t{kProcs} * kRounds);
}
