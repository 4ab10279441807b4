// The etcd backend against a real etcd (Debian's etcd-server), started by
// this test on loopback high ports with a temporary data folder and stopped
// after: the API's promises across processes, death by lease expiry (SIGKILL
// and SIGSTOP past the TTL), interop with `etcdctl lock`, and clear errors.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <clocale>
#include <catch2/catch.hpp>
#include <curl/curl.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "etcd_location.h"
#include "etcd_process.h"
#include "helpers.h"

using namespace locktable;
using testing::check_prefix_listing;
using testing::Pipe;
using testing::shared_memory;
using testing::spawn;
using testing::TempDir;
using testing::wait_child;

namespace {

pid_t start_process(const std::vector<std::string>& args) {
  const pid_t pid = testing::start_quiet_process(args);
  REQUIRE(pid > 0);
  return pid;
}

// One single-member etcd for the whole test program, on free ports outside
// the ephemeral range (two runs at once do not collide), stopped at exit. An
// etcd that exits at start (a port taken since it was found free) is started
// again on other ports.
class EtcdServer {
 public:
  EtcdServer() {
    for (int attempt = 0; attempt < 3; ++attempt) {
      process_ = std::make_unique<testing::EtcdProcess>(testing::free_loopback_ports(2));
      if (process_->ready()) return;
    }
    FAIL("etcd did not start on " + process_->client() + " (is etcd-server installed?); it wrote:\n" +
         process_->log_tail());
  }
  const std::string& client() const { return process_->client(); }
  std::string url(const std::string& prefix, const std::string& query = "") const {
    return process_->url(prefix, query);
  }

 private:
  std::unique_ptr<testing::EtcdProcess> process_;
};

EtcdServer& etcd() {
  static EtcdServer server;
  return server;
}

// A prefix no other test case uses.
std::string fresh_prefix() {
  static int n = 0;
  return "t" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

std::unique_ptr<Table> open_url(const std::string& url) {
  std::unique_ptr<Table> t;
  Status s = Table::open(url, {}, &t);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return t;
}

// A child that opens `url`, takes `name` and holds it until killed.
pid_t etcd_holder(const std::string& url, const std::string& name, Mode mode = Mode::exclusive) {
  Pipe holding;
  pid_t pid = spawn([&] {
    std::unique_ptr<Table> t;
    if (!Table::open(url, {}, &t).ok()) return 1;
    Lock l;
    if (!t->lookup(name, &l).ok() || !l.acquire(mode).held()) return 2;
    holding.send();
    for (;;) ::pause();
  });
  REQUIRE(holding.receive(20000) == '.');
  return pid;
}

int run_shell(const std::string& command) { return std::system(command.c_str()); }

}  // namespace

TEST_CASE("etcd: names are created on lookup; remove refuses a held name; a removed name's handle is stale") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  Lock a;
  CHECK(t->lookup("a", &a, Lookup::existing).code() == Code::not_found);
  REQUIRE(t->lookup("a", &a).ok());
  REQUIRE(a.acquire().held());
  CHECK(t->remove("a").code() == Code::busy);
  REQUIRE(a.release().ok());
  REQUIRE(t->remove("a").ok());
  CHECK(t->remove("a").code() == Code::not_found);
  CHECK(a.acquire().status.code() == Code::stale_handle);
  Lock again;
  REQUIRE(t->lookup("a", &again).ok());
  CHECK(a.acquire().status.code() == Code::stale_handle);  // re-created: the old handle stays stale
  REQUIRE(again.acquire().held());
  REQUIRE(again.release().ok());
  // Names etcd tools cannot type are encoded, never confused with another.
  Lock slash, dot;
  REQUIRE(t->lookup("a/b", &slash).ok());
  REQUIRE(t->lookup(".locktable", &dot).ok());
  REQUIRE(slash.acquire().held());
  CHECK(again.try_acquire().held());  // "a/b" does not queue under "a"
  REQUIRE(again.release().ok());
  REQUIRE(slash.release().ok());
  std::vector<LockInfo> locks;
  REQUIRE(t->list(&locks).ok());
  CHECK(locks.size() == 3);
}

TEST_CASE("etcd: one holder across processes; try and timed acquire; per-thread ownership; tokens grow") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("job", &l).ok());
  AcquireResult first = l.acquire();
  REQUIRE(first.held());
  CHECK(first.token > 0);
  CHECK(l.token() == first.token);
  CHECK(l.acquire().status.code() == Code::already_held);
  std::thread other([&] { CHECK(l.release().code() == Code::not_owner); });
  other.join();
  pid_t kid = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 1;
    Lock cl;
    if (!tt->lookup("job", &cl).ok()) return 2;
    if (cl.try_acquire().status.code() != Code::timed_out) return 3;
    const double start = testing::now_ms();
    if (cl.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(300))).status.code() != Code::timed_out) {
      return 4;
    }
    if (testing::now_ms() - start < 250) return 5;
    return 0;
  });
  CHECK(wait_child(kid) == 0);
  // A timeout longer than the clock can count is a wait for ever, not an immediate timeout.
  pid_t patient = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 1;
    Lock cl;
    if (!tt->lookup("job", &cl).ok()) return 2;
    if (!cl.try_lock_for(std::chrono::duration<double>(1e300))) return 3;
    return cl.release().ok() ? 0 : 4;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const pid_t gave_up = waitpid(patient, nullptr, WNOHANG);
  CHECK(gave_up == 0);  // still waiting
  REQUIRE(l.release().ok());
  if (gave_up == 0) CHECK(wait_child(patient) == 0);
  CHECK(l.release().code() == Code::not_owner);

  // Many processes incrementing a counter under the lock lose nothing.
  struct Counter {
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    int value = 0;
  };
  Counter* c = shared_memory<Counter>();
  std::vector<pid_t> kids;
  for (int p = 0; p < 3; ++p) {
    kids.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      if (!Table::open(url, {}, &tt).ok()) return 1;
      Lock cl;
      if (!tt->lookup("job", &cl).ok()) return 2;
      uint64_t last = 0;
      for (int i = 0; i < 20; ++i) {
        AcquireResult r = cl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
        if (!r.held()) return 3;
        if (r.token <= last) return 4;
        last = r.token;
        if (c->inside.fetch_add(1) != 0) c->overlaps.fetch_add(1);
        ++c->value;
        c->inside.fetch_sub(1);
        if (!cl.release().ok()) return 5;
      }
      return 0;
    }));
  }
  for (pid_t k : kids) CHECK(wait_child(k, 60000) == 0);
  CHECK(c->overlaps == 0);
  CHECK(c->value == 60);
  AcquireResult later = l.acquire();
  REQUIRE(later.held());
  CHECK(later.token > first.token);
  REQUIRE(l.release().ok());
}

// A child that opens `url`, takes `name`, and releases it when `let_go`
// says so (exit 0 when the release succeeded). Returns once it holds.
pid_t etcd_releasing_holder(const std::string& url, const std::string& name, const Pipe& let_go) {
  Pipe holding;
  pid_t pid = spawn([&] {
    std::unique_ptr<Table> t;
    if (!Table::open(url, {}, &t).ok()) return 1;
    Lock l;
    if (!t->lookup(name, &l).ok() || !l.acquire().held()) return 2;
    holding.send();
    if (let_go.receive(30000) != '.') return 3;
    return l.release().ok() ? 0 : 4;
  });
  REQUIRE(holding.receive(20000) == '.');
  return pid;
}

// Whether another process gets the free lock `name` within `ms` (and lets go):
// nothing left in the queue ahead of it.
bool next_taker_gets_it_within(const std::string& url, const std::string& name, int ms) {
  pid_t next = spawn([&] {
    std::unique_ptr<Table> t;
    if (!Table::open(url, {}, &t).ok()) return 1;
    Lock l;
    if (!t->lookup(name, &l).ok()) return 2;
    if (l.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(ms))).status.code() != Code::ok) return 3;
    return l.release().ok() ? 0 : 4;
  });
  return wait_child(next) == 0;
}

TEST_CASE("etcd: an interrupted wait gives up its place in the queue; the next taker is not kept behind it") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("job", &l).ok());
  Pipe let_go;
  pid_t holder = etcd_releasing_holder(url, "job", let_go);
  testing::FlagInterrupt f;
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // past the quick polls: in a watch
    f.stop = true;
  });
  const double start = testing::now_ms();
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30)).interruptible_by(&f));
  const double waited = testing::now_ms() - start;
  stopper.join();
  CHECK(r.status.code() == Code::interrupted);
  CHECK(waited >= 390);
  CHECK(waited < 2000);  // a watch is cut to 100 ms when the wait is interruptible
  let_go.send();
  CHECK(wait_child(holder) == 0);
  CHECK(next_taker_gets_it_within(url, "job", 0));  // a try: the interrupted waiter's entry is gone
}

TEST_CASE("etcd: run waiting for its lock dies of INT at once and withdraws its place, not left for its lease's TTL") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=10");
  const char* cli = std::getenv("LOCKTABLE_CLI");
  REQUIRE(cli != nullptr);
  TempDir tmp;
  const std::string marker = tmp.path() + "/ran";
  Pipe let_go;
  pid_t holder = etcd_releasing_holder(url, "job", let_go);
  pid_t waiter = start_process({cli, "run", url, "job", "--", "touch", marker});
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // queued and waiting
  REQUIRE(::kill(waiter, SIGINT) == 0);
  CHECK(testing::ends_within(waiter, 1000));
  CHECK(wait_child(waiter) == 128 + SIGINT);
  CHECK(::access(marker.c_str(), F_OK) != 0);  // the command never ran
  let_go.send();
  CHECK(wait_child(holder) == 0);
  // A dead waiter's queue entry would keep every later taker out until its lease ran out (10 s).
  CHECK(next_taker_gets_it_within(url, "job", 3000));
}

TEST_CASE("etcd: list(busy) names the held locks only, with how long each holder has held") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  std::vector<Lock> locks;
  REQUIRE(t->lookup(std::vector<std::string>{"idle-a", "held-w", "idle-b", "held-r"}, &locks).ok());
  pid_t writer = etcd_holder(url, "held-w");
  pid_t reader = etcd_holder(url, "held-r", Mode::shared);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<LockInfo> busy;
  REQUIRE(t->list(&busy, ListScope::busy).ok());
  std::set<std::string> names;
  for (const LockInfo& l : busy) {
    names.insert(l.name);
    REQUIRE(l.holders.size() == 1);
    REQUIRE(l.holders[0].held_for_ms.has_value());  // from the marker the ownership put
    CHECK(*l.holders[0].held_for_ms >= 250);
    CHECK(*l.holders[0].held_for_ms < 60000);
  }
  CHECK(names == std::set<std::string>{"held-w", "held-r"});
  for (pid_t p : {writer, reader}) {
    ::kill(p, SIGKILL);
    wait_child(p);
  }
}

TEST_CASE("etcd: list with a prefix names exactly the names that begin with it (a key range), held or not") {
  auto t = open_url(etcd().url(fresh_prefix()));
  check_prefix_listing(*t);
}

TEST_CASE("etcd: a name that is not UTF-8 comes back exactly, also in history; a thread name that is not UTF-8 "
          "stops no lock") {
  auto t = open_url(etcd().url(fresh_prefix()));
  const std::string name = "bin\xff\xfe/x";
  Lock l;
  REQUIRE(t->lookup(name, &l).ok());
  Status acquired, released;
  std::thread([&] {
    ::pthread_setname_np(::pthread_self(), "w\xff\xfe");  // comm is stored in every owner value
    acquired = l.acquire().status;
    released = l.release();
  }).join();
  CHECK(acquired.to_string() == "ok");
  CHECK(released.to_string() == "ok");
  std::vector<LockInfo> ls;
  REQUIRE(t->list(&ls, ListScope::all, "bin\xff").ok());
  REQUIRE(ls.size() == 1);
  CHECK(ls[0].name == name);
  std::vector<Event> events;
  HistoryQuery q;
  q.name = name;
  REQUIRE(t->history(q, &events).ok());
  std::multiset<EventKind> kinds;
  for (const Event& e : events) kinds.insert(e.kind);
  CHECK(kinds == std::multiset<EventKind>{EventKind::created, EventKind::acquired, EventKind::released});
  CHECK(t->remove(name).ok());
}

TEST_CASE("etcd: a downgrade lets the waiting reader in and keeps the writer queued behind it out") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("doc", &l).ok());
  AcquireResult held = l.acquire();
  REQUIRE(held.held());
  struct Order {
    std::atomic<int> reader_in{0}, writer_in{0};
    std::atomic<int> reader_saw_writer{0};  // the writer got in while the reader was inside
    std::atomic<int> release_reader{0};
  };
  Order* o = shared_memory<Order>();
  auto queued = [&](size_t n) {  // waits until the queue has n keys
    const double until = testing::now_ms() + 10000;
    std::vector<LockInfo> locks;
    while (testing::now_ms() < until) {
      REQUIRE(t->list(&locks).ok());
      if (!locks.empty() && locks[0].waiting.size() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  pid_t reader = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 1;
    Lock cl;
    if (!tt->lookup("doc", &cl).ok() || !cl.acquire(Mode::shared, Deadline::after(std::chrono::seconds(20))).held()) return 2;
    o->reader_in = 1;
    while (o->release_reader.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (o->writer_in.load() != 0) o->reader_saw_writer = 1;
    return cl.release(Mode::shared).ok() ? 0 : 3;
  });
  REQUIRE(queued(1));
  pid_t writer = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 1;
    Lock cl;
    if (!tt->lookup("doc", &cl).ok() || !cl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20))).held()) return 2;
    o->writer_in = 1;
    return cl.release().ok() ? 0 : 3;
  });
  REQUIRE(queued(2));
  REQUIRE(l.downgrade().ok());
  CHECK(l.token() == held.token);  // the token stays
  CHECK(l.downgrade().code() == Code::not_owner);  // held shared now
  const double until = testing::now_ms() + 10000;
  while (o->reader_in.load() == 0 && testing::now_ms() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(o->reader_in.load() == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(o->writer_in.load() == 0);  // two readers inside: the writer waits
  REQUIRE(l.release(Mode::shared).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(o->writer_in.load() == 0);  // still one reader inside
  o->release_reader = 1;
  CHECK(wait_child(reader, 20000) == 0);
  CHECK(wait_child(writer, 20000) == 0);
  CHECK(o->writer_in.load() == 1);
  CHECK(o->reader_saw_writer.load() == 0);
  std::vector<Event> events;
  HistoryQuery q;
  q.name = "doc";
  REQUIRE(t->history(q, &events).ok());
  CHECK(std::count_if(events.begin(), events.end(), [](const Event& e) { return e.kind == EventKind::downgraded; }) == 1);
}

TEST_CASE("etcd: shared holders together, writers kept out, and a waiting writer keeps later readers out") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("doc", &l).ok());
  pid_t reader = etcd_holder(url, "doc", Mode::shared);
  CHECK(l.acquire(Mode::shared, Deadline::after(std::chrono::seconds(5))).held());
  REQUIRE(l.release(Mode::shared).ok());
  CHECK(l.try_acquire().status.code() == Code::timed_out);
  // A writer waits; a reader that comes after it stays out.
  pid_t writer = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 1;
    Lock cl;
    if (!tt->lookup("doc", &cl).ok()) return 2;
    return cl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20))).held() && cl.release().ok() ? 0 : 3;
  });
  const double until = testing::now_ms() + 10000;
  std::vector<LockInfo> locks;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(t->list(&locks).ok());
  } while (locks[0].waiting.empty() && testing::now_ms() < until);
  REQUIRE(locks[0].waiting.size() == 1);
  CHECK(locks[0].waiting[0].mode == Mode::exclusive);
  CHECK(locks[0].state == LockState::shared);
  CHECK(l.acquire(Mode::shared, Deadline::after(std::chrono::milliseconds(300))).status.code() == Code::timed_out);
  ::kill(reader, SIGKILL);  // the writer gets it once the reader's lease runs out
  wait_child(reader);
  CHECK(wait_child(writer, 30000) == 0);
}

TEST_CASE("etcd: a SIGKILLed holder's lock goes to one waiter, told abandoned, within the TTL and a second") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("crashy", &l).ok());
  pid_t holder = etcd_holder(url, "crashy");
  struct Report {
    std::atomic<int> abandoned{0};
    std::atomic<int> other{0};
    std::atomic<int64_t> abandoned_at_ms{0};
    std::atomic<uint32_t> dead_start{0};
  };
  Report* report = shared_memory<Report>();
  std::vector<pid_t> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.push_back(spawn([&] {
      std::unique_ptr<Table> tt;
      if (!Table::open(url, {}, &tt).ok()) return 1;
      Lock cl;
      if (!tt->lookup("crashy", &cl).ok()) return 2;
      AcquireResult r = cl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
      if (!r.held()) return 3;
      if (r.abandoned()) {
        report->abandoned_at_ms = int64_t(testing::now_ms());
        report->abandoned.fetch_add(1);
        if (r.dead_owner.pid == 0) return 4;
        report->dead_start = r.dead_owner.start_time;
        (void)cl.mark_consistent();
      } else {
        report->other.fetch_add(1);
      }
      return cl.release().ok() ? 0 : 5;
    }));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const double killed = testing::now_ms();
  ::kill(holder, SIGKILL);
  wait_child(holder);
  for (pid_t w : waiters) CHECK(wait_child(w, 30000) == 0);
  CHECK(report->abandoned == 1);
  CHECK(report->other == 1);
  CHECK(double(report->abandoned_at_ms.load()) - killed < 2000 + 1000);  // within the TTL and a second
  AcquireResult mine = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
  REQUIRE(mine.held());
  CHECK_FALSE(mine.abandoned());  // marked consistent by the one that was told
  REQUIRE(l.release().ok());
  std::vector<Event> events;
  HistoryQuery q;
  q.kind = EventKind::acquired;
  REQUIRE(t->history(q, &events).ok());
  int abandoned_events = 0;
  for (const Event& e : events) abandoned_events += e.abandoned ? 1 : 0;
  CHECK(abandoned_events == 1);
  // The takeover's `recovered` event names the dead holder as the taker was
  // told it, start time included (what tells a reused pid apart).
  q.kind = EventKind::recovered;
  REQUIRE(t->history(q, &events).ok());
  REQUIRE(events.size() == 1);
  CHECK(events[0].dead_owner.pid == uint32_t(holder));
  CHECK(events[0].dead_owner.start_time != 0);
  CHECK(events[0].dead_owner.start_time == report->dead_start.load());
}

TEST_CASE("etcd: abandonment carries on until a holder marks the lock consistent, naming the same dead holder") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("carried", &l).ok());
  pid_t holder = etcd_holder(url, "carried");
  ::kill(holder, SIGKILL);
  wait_child(holder);
  AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
  REQUIRE(r.abandoned());
  CHECK(r.dead_owner.pid == uint32_t(holder));
  CHECK(r.dead_owner.start_time != 0);  // what tells a reused pid apart
  REQUIRE(l.release().ok());            // released without repair
  std::thread([&] {                     // another thread is told again, of the same holder
    AcquireResult again = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
    CHECK(again.abandoned());
    CHECK(again.dead_owner == r.dead_owner);
    CHECK(l.mark_consistent().ok());
    CHECK(l.release().ok());
  }).join();
  AcquireResult after = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
  REQUIRE(after.held());
  CHECK_FALSE(after.abandoned());
  REQUIRE(l.release().ok());
}

TEST_CASE("etcd: a holder stopped past the TTL loses the lock: the next is told abandoned; the old release fails") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("paused", &l).ok());
  Pipe held, resumed;
  struct Report {
    uint64_t token = 0;
    int release_code = -1;
  };
  Report* report = shared_memory<Report>();
  pid_t holder = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 1;
    Lock cl;
    if (!tt->lookup("paused", &cl).ok()) return 2;
    AcquireResult r = cl.acquire();
    if (!r.held()) return 3;
    report->token = r.token;
    held.send();
    if (resumed.receive(60000) == 0) return 4;
    report->release_code = int(cl.release().code());
    return 0;
  });
  REQUIRE(held.receive(20000) == '.');
  ::kill(holder, SIGSTOP);
  AcquireResult mine = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
  REQUIRE(mine.held());
  CHECK(mine.abandoned());
  CHECK(mine.dead_owner.pid == uint32_t(holder));
  CHECK(mine.token > report->token);
  ::kill(holder, SIGCONT);
  resumed.send();
  CHECK(wait_child(holder, 30000) == 0);
  CHECK(report->release_code == int(Code::lock_lost));
  REQUIRE(l.mark_consistent().ok());
  REQUIRE(l.release().ok());
}

TEST_CASE("etcd: a holder cut off from etcd for longer than the TTL stops being told it holds; its release settles "
          "it") {
  testing::EtcdProcess alone(testing::free_loopback_ports(2), "cutoff");
  REQUIRE(alone.ready());
  const std::string url = alone.url("cut", "?ttl=2");
  struct Report {
    std::atomic<double> lost_at_ms{0};  // when the holder's token() first said 0
    int release_code = -1;
  };
  Report* report = shared_memory<Report>();
  Pipe held, resumed;
  pid_t holder = spawn([&] {
    std::unique_ptr<Table> t;
    if (!Table::open(url, {}, &t).ok()) return 1;
    Lock l;
    if (!t->lookup("cut", &l).ok() || !l.acquire().held()) return 2;
    held.send();
    while (resumed.receive(20) == 0) {  // every 20 ms until the parent says etcd answers again
      if (l.token() == 0 && report->lost_at_ms.load() == 0) report->lost_at_ms = testing::now_ms();
    }
    report->release_code = int(l.release().code());
    return 0;
  });
  REQUIRE(held.receive(20000) == '.');
  const double cut_at = testing::now_ms();
  REQUIRE(::kill(alone.pid(), SIGSTOP) == 0);  // etcd stops answering: as a partition, for this holder
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  ::kill(alone.pid(), SIGCONT);
  resumed.send();
  CHECK(wait_child(holder, 30000) == 0);
  // Told once the TTL from its last renewal (at most a third of it before the cut) has passed: after
  // 1.33 s, by 2 s (and a loaded machine's lateness in polling), not only at release as before.
  REQUIRE(report->lost_at_ms.load() > 0);
  CHECK(report->lost_at_ms.load() - cut_at > 1000);
  CHECK(report->lost_at_ms.load() - cut_at < 3000);
  // Whether etcd expired the lease before the holder renewed it again is a race: either way the
  // release says what happened, and the next holder is told abandoned exactly when it was lost.
  const int code = report->release_code;
  CHECK((code == int(Code::ok) || code == int(Code::lock_lost)));
  auto t = open_url(url);
  Lock next;
  REQUIRE(t->lookup("cut", &next).ok());
  AcquireResult r = next.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  REQUIRE(r.held());
  CHECK(r.abandoned() == (code == int(Code::lock_lost)));
  if (r.abandoned()) CHECK(next.mark_consistent().ok());
  CHECK(next.release().ok());
}

TEST_CASE("etcd: run sends TERM to its command once its lock is lost (cut off from etcd past the TTL), and exits 10") {
  testing::EtcdProcess alone(testing::free_loopback_ports(2), "runcut");
  REQUIRE(alone.ready());
  const std::string url = alone.url("runcut", "?ttl=2");
  const char* cli = std::getenv("LOCKTABLE_CLI");
  REQUIRE(cli != nullptr);
  TempDir tmp;
  const std::string out = tmp.path() + "/out";
  const double started = testing::now_ms();
  pid_t runner = spawn([&] {
    const int st = run_shell("'" + std::string(cli) + "' run '" + url + "' job -- sleep 30 > " + out + " 2>&1");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
  });
  auto t = open_url(url);
  std::vector<LockInfo> locks;
  for (const double until = testing::now_ms() + 10000; testing::now_ms() < until;) {
    REQUIRE(t->list(&locks).ok());
    if (!locks.empty() && !locks[0].holders.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE((!locks.empty() && !locks[0].holders.empty()));
  REQUIRE(::kill(alone.pid(), SIGSTOP) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  ::kill(alone.pid(), SIGCONT);
  CHECK(wait_child(runner, 30000) == 10);
  CHECK(testing::now_ms() - started < 20000);  // sleep 30 did not run to its end
  std::ifstream in(out);
  const std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(said.find("lost") != std::string::npos);
  CHECK(said.find("'job'") != std::string::npos);
}

TEST_CASE("etcd: with etcd's space quota used up, releases free the locks and nobody is told abandoned") {
  // An etcd of its own with a 2 MB quota; filled, it takes reads and deletions only.
  testing::EtcdProcess full(testing::free_loopback_ports(2), "full", {"--quota-backend-bytes=2000000"});
  REQUIRE(full.ready());
  const std::string url = full.url("quota", "?ttl=2");
  const std::string etcdctl = "ETCDCTL_API=3 etcdctl --endpoints " + full.client();
  auto t = open_url(url);
  Lock writer, reader;
  REQUIRE(t->lookup("written", &writer).ok());
  REQUIRE(t->lookup("read", &reader).ok());
  REQUIRE(writer.acquire().status.ok());
  REQUIRE(reader.acquire(Mode::shared).status.ok());
  TempDir tmp;
  const std::string filler = tmp.path() + "/filler";
  REQUIRE(run_shell("head -c 300000 /dev/urandom | base64 -w0 > " + filler) == 0);
  bool exceeded = false;
  for (int i = 0; i < 40 && !exceeded; ++i) {
    exceeded = run_shell(etcdctl + " put filler" + std::to_string(i) + " < " + filler +
                         " 2>&1 | grep -q 'space exceeded'") == 0;
  }
  REQUIRE(exceeded);
  {
    Lock other;
    REQUIRE(t->lookup("other", &other, Lookup::existing).code() == Code::not_found);
    Status s = t->lookup("other", &other);  // a new name is a write: refused, clearly
    CHECK(s.code() == Code::capacity);
    CHECK(s.message().find(full.client()) != std::string::npos);
    CHECK(s.message().find("space exceeded") != std::string::npos);
  }
  // A table opened now (etcd grants no lease either) still shows who holds what.
  std::unique_ptr<Table> late;
  {
    Status s = Table::open(url, {}, &late);
    INFO(s.to_string());
    REQUIRE(s.ok());
    std::vector<LockInfo> infos;
    REQUIRE(late->list(&infos).ok());
    bool seen = false;
    for (const LockInfo& i : infos) seen |= i.name == "written" && i.state == LockState::held;
    CHECK(seen);
    Lock mine;
    REQUIRE(late->lookup("written", &mine, Lookup::existing).ok());
    CHECK(mine.try_acquire().status.code() == Code::capacity);  // no lease to hold it under
  }
  const double before = testing::now_ms();
  CHECK(writer.release().ok());
  CHECK(reader.release(Mode::shared).ok());
  CHECK(testing::now_ms() - before < 1500);  // no retrying for the lease's lifetime
  // Space freed and the alarm disarmed, as an operator would.
  REQUIRE(run_shell(etcdctl + " del --prefix filler >/dev/null") == 0);
  REQUIRE(run_shell(etcdctl + " compact $(" + etcdctl +
                    " endpoint status -w json | grep -o '\"revision\":[0-9]*' | cut -d: -f2) >/dev/null") == 0);
  REQUIRE(run_shell(etcdctl + " defrag >/dev/null && " + etcdctl + " alarm disarm >/dev/null") == 0);
  AcquireResult w = writer.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  REQUIRE(w.held());
  CHECK_FALSE(w.abandoned());  // its holder released: it did not die
  CHECK(writer.release().ok());
  AcquireResult r = reader.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  REQUIRE(r.held());
  CHECK_FALSE(r.abandoned());  // nor did the reader
  CHECK(reader.release().ok());
  Lock mine;  // the table opened without a lease gets one now
  REQUIRE(late->lookup("written", &mine, Lookup::existing).ok());
  CHECK(mine.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10))).status.ok());
  CHECK(mine.release().ok());
}

TEST_CASE("etcd: etcdctl lock P/N and locktable's N on etcd://.../P exclude each other") {
  const std::string prefix = fresh_prefix();
  const std::string url = etcd().url(prefix);
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("shared-job", &l).ok());
  const std::string etcdctl = "ETCDCTL_API=3 etcdctl --endpoints " + etcd().client();
  // etcdctl holds: locktable waits.
  pid_t outside = spawn([&] {
    // Long enough that a loaded machine seeing the hold late still finds more than 500 ms of it left.
    return run_shell(etcdctl + " lock " + prefix + "/shared-job -- sleep 4 >/dev/null 2>&1") == 0 ? 0 : 1;
  });
  const double until = testing::now_ms() + 10000;
  std::vector<LockInfo> locks;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(t->list(&locks).ok());
  } while (locks[0].holders.empty() && testing::now_ms() < until);
  REQUIRE(locks[0].holders.size() == 1);
  CHECK(locks[0].holders[0].comm.rfind("etcd session ", 0) == 0);  // no pid to show: its session, by lease
  CHECK(locks[0].holders[0].comm.size() > std::string("etcd session ").size());
  CHECK(l.try_acquire().status.code() == Code::timed_out);
  const double start = testing::now_ms();
  REQUIRE(l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20))).held());
  CHECK(testing::now_ms() - start > 500);  // it waited for etcdctl's hold to end
  CHECK(wait_child(outside, 30000) == 0);
  // locktable holds: etcdctl waits (it cannot get in within 1 s).
  const double before = testing::now_ms();
  pid_t waiting = spawn([&] {
    return run_shell(etcdctl + " lock " + prefix + "/shared-job -- true >/dev/null 2>&1") == 0 ? 0 : 1;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  REQUIRE(l.release().ok());
  CHECK(wait_child(waiting, 30000) == 0);
  CHECK(testing::now_ms() - before >= 1000);
}

TEST_CASE("etcd: the tool runs on the URL, and history is readable from any process") {
  const std::string url = etcd().url(fresh_prefix());
  const char* cli = std::getenv("LOCKTABLE_CLI");
  REQUIRE(cli != nullptr);
  const std::string lt = std::string(cli);
  REQUIRE(run_shell(lt + " init '" + url + "' >/dev/null") == 0);
  REQUIRE(run_shell(lt + " init '" + url + "' >/dev/null") == 0);  // no-op on a table
  REQUIRE(run_shell(lt + " run '" + url + "' nightly -- sh -c 'test \"$LOCKTABLE_TOKEN\" -gt 0'") == 0);
  REQUIRE(run_shell(lt + " ls '" + url + "' --json | grep -q nightly") == 0);
  REQUIRE(run_shell(lt + " history '" + url + "' --json | grep -q '\"event\":\"released\"'") == 0);
  REQUIRE(run_shell(lt + " rm '" + url + "' nightly") == 0);
  auto t = open_url(url);
  std::vector<Event> events;
  REQUIRE(t->history(HistoryQuery{}, &events).ok());
  REQUIRE(events.size() >= 4);  // created, acquired, released, removed
  CHECK(events.front().kind == EventKind::created);
  CHECK(events.back().kind == EventKind::removed);
  for (size_t i = 1; i < events.size(); ++i) CHECK(events[i].seq > events[i - 1].seq);
  // A retention age whose nanoseconds overflow 64 bits keeps every event.
  for (int64_t age : {int64_t{1} << 40, int64_t{1} << 55, INT64_MAX}) {
    INFO("age " << age << " s");
    REQUIRE(t->set_retention(0, std::chrono::seconds(age)).ok());
    std::vector<Event> kept;
    REQUIRE(t->history(HistoryQuery{}, &kept).ok());
    REQUIRE(t->history(HistoryQuery{}, &kept).ok());  // retention was applied by the read before
    CHECK(kept.size() == events.size());
  }
}

TEST_CASE("etcd: bad URLs, unreachable endpoints and a foreign prefix are clear errors; failover to a live endpoint") {
  std::unique_ptr<Table> t;
  Status s = Table::open("etcd://127.0.0.1:1/x", {}, &t);
  CHECK(s.code() == Code::io_error);
  CHECK(s.message().find("127.0.0.1:1") != std::string::npos);
  CHECK(s.message().find("unreachable") != std::string::npos);
  for (const char* bad : {"etcd://", "etcd://host/x", "etcd://h:99999/x", "etcd://h:1", "etcd://h:1/x?ttl=abc",
                          "etcd://h:1/x?colour=red", "etcd://h:1/x?ttl=", "etcd://h:1/x?ttl=5&ttl=6",
                          "etcd://h:1/x?user=app", "etcd://h:1/x?password_file=/pw", "etcd://app:pw@h:1/x",
                          "etcd://h:1/x?cacert=/ca.pem", "etcds://h:1/x?cert=/c.pem", "etcds://h:1/x?key=/c.key",
                          "etcd://[::1/x", "etcd://[::1:1/x", "etcd://[zz]:1/x", "etcd://a[b]:1/x", "etcd://:1/x",
                          "etcd://a:b:1/x"}) {
    Status b = Table::open(bad, {}, &t);
    INFO(bad << ": " << b.to_string());
    CHECK(b.code() == Code::invalid_argument);
    CHECK(b.message().find(bad) != std::string::npos);
  }
  s = Table::open("etcd://[::1]:1/x", {}, &t);  // an IPv6 literal is an endpoint like any other
  CHECK(s.code() == Code::io_error);
  CHECK(s.message().find("[::1]:1") != std::string::npos);
  // A dead endpoint first, a live one second: the table opens and works.
  const std::string prefix = fresh_prefix();
  auto both = open_url("etcd://127.0.0.1:1," + etcd().client() + "/" + prefix);
  Lock l;
  REQUIRE(both->lookup("x", &l).ok());
  REQUIRE(l.acquire().held());
  REQUIRE(l.release().ok());
  // A prefix that holds keys of something else.
  REQUIRE(run_shell("ETCDCTL_API=3 etcdctl --endpoints " + etcd().client() + " put foreign-" + prefix +
                    "/k v >/dev/null") == 0);
  s = Table::open(etcd().url("foreign-" + prefix), {}, &t);
  CHECK(s.code() == Code::corrupt);
  CHECK(s.message().find("not a locktable table") != std::string::npos);
}

TEST_CASE("etcd: a table is not created inside another table's prefix, whose lock of that name would wait for ever") {
  const std::string outer = fresh_prefix();
  auto t = open_url(etcd().url(outer));
  std::unique_ptr<Table> inner;
  for (const std::string& p : {outer + "/jobs", outer + "/jobs/nightly", outer + "/.locktable/x"}) {
    Status s = Table::open(etcd().url(p), {}, &inner);
    INFO(p << ": " << s.to_string());
    CHECK(s.code() == Code::invalid_argument);
    CHECK(s.message().find("inside the table at '" + outer + "'") != std::string::npos);
  }
  // Also while the outer table's lock of that name is held (the prefix is not empty then).
  Lock jobs;
  REQUIRE(t->lookup("jobs", &jobs).ok());
  REQUIRE(jobs.acquire().held());
  Status s = Table::open(etcd().url(outer + "/jobs"), {}, &inner);
  CHECK(s.code() == Code::invalid_argument);
  REQUIRE(jobs.release().ok());
  // The outer lock named like the refused tables is free to take.
  REQUIRE(jobs.try_acquire().held());
  REQUIRE(jobs.release().ok());
  // A sibling prefix that merely begins the same is another table.
  auto sibling = open_url(etcd().url(outer + "-jobs"));
  Lock l;
  REQUIRE(sibling->lookup("x", &l).ok());
  REQUIRE(l.try_acquire().held());
  REQUIRE(l.release().ok());
}

// A child that opens `url`, finds `name` held (a try fails), says so, and
// then waits up to 20 s for it: 0 once it held and released it.
pid_t etcd_waiter(const std::string& url, const std::string& name, Pipe* waiting) {
  return spawn([=] {
    std::unique_ptr<Table> t;
    if (!Table::open(url, {}, &t).ok()) return 1;
    Lock l;
    if (!t->lookup(name, &l).ok() || l.try_acquire().status.code() != Code::timed_out) return 2;
    waiting->send();
    if (!l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20))).held()) return 3;
    return l.release().ok() ? 0 : 4;
  });
}

TEST_CASE("etcd: etcds:// takes the same locks over TLS with a client certificate; a wrong TLS setup is a clear error") {
  TempDir certs;
  REQUIRE(testing::make_test_certificates(certs.path()));
  testing::EtcdProcess secure(testing::free_loopback_ports(2), "tls", {}, certs.path());
  INFO(secure.log_tail());
  REQUIRE(secure.ready());
  const std::string url = secure.url("tls");
  REQUIRE(url.rfind("etcds://", 0) == 0);
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("job", &l).ok());
  REQUIRE(l.acquire().held());
  Pipe waiting;
  const pid_t waiter = etcd_waiter(url, "job", &waiting);
  REQUIRE(waiting.receive(20000) == '.');
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // past its quick polls: it watches
  REQUIRE(l.release().ok());
  CHECK(wait_child(waiter, 30000) == 0);
  const char* cli = std::getenv("LOCKTABLE_CLI");
  REQUIRE(cli != nullptr);
  CHECK(run_shell(std::string(cli) + " run '" + url + "' job -- sh -c 'test \"$LOCKTABLE_TOKEN\" -gt 0'") == 0);

  std::unique_ptr<Table> bad;
  const std::string at = secure.client() + "/tls";
  Status s = Table::open("etcd://" + at, {}, &bad);  // plain HTTP to a TLS member
  CHECK(s.code() == Code::io_error);
  CHECK(s.message().find(secure.client()) != std::string::npos);
  CHECK(s.message().find("etcds://") != std::string::npos);
  s = Table::open("etcds://" + at, {}, &bad);  // its CA is not this machine's
  CHECK(s.code() == Code::io_error);
  CHECK(s.message().find("cacert=") != std::string::npos);
  s = Table::open("etcds://" + at + "?cacert=" + certs.path() + "/ca.pem", {}, &bad);  // no client certificate
  CHECK(s.code() == Code::io_error);
  CHECK(s.message().find(secure.client()) != std::string::npos);
  s = Table::open("etcds://" + at + "?cacert=" + certs.path() + "/missing.pem", {}, &bad);
  CHECK(s.code() == Code::not_found);
  CHECK(s.message().find(certs.path() + "/missing.pem") != std::string::npos);
  // The lock is still there and free: nothing of it was lost.
  Lock again;
  REQUIRE(t->lookup("job", &again, Lookup::existing).ok());
  CHECK(again.try_acquire().held());
  CHECK(again.release().ok());
}

TEST_CASE("etcd: with etcd's authentication, user and password_file take the locks (also once it is turned on); "
          "expired tokens are renewed") {
  // Tokens expire after a second without use, so that this test's pauses outlive them.
  testing::EtcdProcess guarded(testing::free_loopback_ports(2), "auth", {"--auth-token-ttl=1"});
  INFO(guarded.log_tail());
  REQUIRE(guarded.ready());
  const std::string etcdctl = "ETCDCTL_API=3 etcdctl --endpoints " + guarded.client();
  const std::string root = etcdctl + " --user root:rootpw";
  REQUIRE(run_shell(etcdctl + " user add root:rootpw --interactive=false >/dev/null && " + etcdctl +
                    " user grant-role root root >/dev/null && " + etcdctl +
                    " user add app:first --interactive=false >/dev/null && " + etcdctl +
                    " role add app >/dev/null && " + etcdctl + " role grant-permission app --prefix=true readwrite jobs/ >/dev/null && " + etcdctl +
                    " user grant-role app app >/dev/null") == 0);
  TempDir tmp;
  const std::string password = tmp.path() + "/password";
  std::ofstream(password) << "first\n";
  const std::string url = guarded.url("jobs", "?ttl=10&user=app&password_file=" + password);
  // Opened while authentication is still off, the table logs in once it is on.
  auto t = open_url(url);
  REQUIRE(run_shell(etcdctl + " auth enable >/dev/null") == 0);
  Lock l;
  REQUIRE(t->lookup("nightly", &l).ok());
  REQUIRE(l.acquire().held());
  Pipe waiting;
  const pid_t waiter = etcd_waiter(url, "nightly", &waiting);  // it watches with its own token
  REQUIRE(waiting.receive(20000) == '.');
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the parent's token expires meanwhile
  CHECK(l.release().ok());
  CHECK(wait_child(waiter, 30000) == 0);
  // A new password, in etcd and in the file: the next authentication reads it.
  REQUIRE(run_shell("echo second | " + root + " user passwd app --interactive=false >/dev/null") == 0);
  std::ofstream(password) << "second\n";
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  REQUIRE(l.acquire().held());
  CHECK(l.release().ok());

  std::unique_ptr<Table> bad;
  Status s = Table::open(guarded.url("jobs"), {}, &bad);  // no user
  CHECK(s.code() == Code::permission_denied);
  CHECK(s.message().find(guarded.client()) != std::string::npos);
  CHECK(s.message().find("user=NAME&password_file=PATH") != std::string::npos);
  const std::string wrong = tmp.path() + "/wrong";
  std::ofstream(wrong) << "first\n";
  s = Table::open(guarded.url("jobs", "?user=app&password_file=" + wrong), {}, &bad);
  CHECK(s.code() == Code::permission_denied);
  CHECK(s.message().find("'app'") != std::string::npos);
  s = Table::open(guarded.url("elsewhere", "?user=app&password_file=" + password), {}, &bad);  // not granted
  CHECK(s.code() == Code::permission_denied);
  CHECK(s.message().find("permission denied") != std::string::npos);
  s = Table::open(guarded.url("jobs", "?user=app&password_file=" + tmp.path() + "/none"), {}, &bad);
  CHECK(s.code() == Code::not_found);
  CHECK(s.message().find(tmp.path() + "/none") != std::string::npos);
}

TEST_CASE("etcd: after fork the child opens the table again; the parent's table refuses the child") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("f", &l).ok());
  pid_t kid = spawn([&] {
    if (l.acquire().status.code() != Code::unsupported) return 1;  // the parent's table
    std::unique_ptr<Table> mine;
    if (!Table::open(url, {}, &mine).ok()) return 2;
    Lock cl;
    if (!mine->lookup("f", &cl).ok() || !cl.acquire().held() || !cl.release().ok()) return 3;
    return 0;
  });
  CHECK(wait_child(kid, 30000) == 0);
  REQUIRE(l.acquire().held());  // the parent is unharmed
  REQUIRE(l.release().ok());
}

TEST_CASE("etcd: every name has one key segment, and it decodes back to the name") {
  std::string all;
  for (int c = 1; c < 256; ++c) all.push_back(char(c));
  for (const std::string& name : {std::string("plain-name_1.x"), std::string("a/b"), std::string(".locktable"),
                                  std::string("%41"), std::string("sp ace"), all}) {
    const std::string segment = detail::encode_name_segment(name);
    CHECK(segment.find('/') == std::string::npos);
    CHECK(segment[0] != '.');
    std::string back;
    REQUIRE(detail::decode_name_segment(segment, &back));
    CHECK(back == name);
  }
  CHECK(detail::encode_name_segment("plain-name_1.x") == "plain-name_1.x");  // what etcdctl users type
  std::string junk;
  CHECK_FALSE(detail::decode_name_segment("%4", &junk));
  CHECK_FALSE(detail::decode_name_segment("%zz", &junk));
}

TEST_CASE("etcd: a URL's prefix is percent-decoded, as etcdctl's prefix is typed; a bad escape is refused") {
  detail::EtcdLocation loc;
  REQUIRE(detail::parse_etcd_location("etcd://h:1/my%20app%2Fjobs%3F/", &loc).ok());
  CHECK(loc.prefix == "my app/jobs?");
  REQUIRE(detail::parse_etcd_location("etcd://h:1/app%2F%2F", &loc).ok());  // trailing slashes go, encoded or not
  CHECK(loc.prefix == "app");
  for (const char* bad : {"etcd://h:1/app%2", "etcd://h:1/a%zzb", "etcd://h:1/%2F"}) {
    Status s = detail::parse_etcd_location(bad, &loc);
    INFO(bad << ": " << s.to_string());
    CHECK(s.code() == Code::invalid_argument);
    CHECK(s.message().find(bad) != std::string::npos);
  }
  // The same lock as etcdctl's on the decoded prefix.
  const std::string prefix = fresh_prefix() + " spaced";
  std::string encoded;
  for (char c : prefix) encoded += c == ' ' ? std::string("%20") : std::string(1, c);
  auto t = open_url(etcd().url(encoded));
  Lock l;
  REQUIRE(t->lookup("N", &l).ok());
  REQUIRE(l.acquire().held());
  CHECK(run_shell("ETCDCTL_API=3 etcdctl --endpoints " + etcd().client() + " get --prefix --keys-only '" + prefix +
                  "/N/' | grep -q .") == 0);
  REQUIRE(l.release().ok());
}

TEST_CASE("etcd: a name is one key in every locale: a process in a Latin-1 locale is kept out of a held name") {
  // In fr_FR.ISO-8859-1, <cctype>'s isalnum(0xE9) is true: a key encoding
  // that asked it would give that process another key for the same name,
  // and a second holder. The locale is compiled here (localedef, from
  // Debian's `locales` data) so that the test needs no system locale.
  TempDir locales;
  const std::string locale = "fr_FR.ISO-8859-1";
  REQUIRE(run_shell("localedef -i fr_FR -f ISO-8859-1 " + locales.path() + "/" + locale + " 2>/dev/null") == 0);
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  const std::string name = "\xe9t\xe9";  // "été" in Latin-1
  Lock l;
  REQUIRE(t->lookup(name, &l).ok());
  REQUIRE(l.acquire().held());
  pid_t kid = spawn([&] {
    ::setenv("LOCPATH", locales.path().c_str(), 1);
    if (std::setlocale(LC_CTYPE, locale.c_str()) == nullptr) return 10;
    if (!std::isalnum(0xE9)) return 11;  // the locale is not what the test needs
    std::unique_ptr<Table> tt;
    if (!Table::open(url, {}, &tt).ok()) return 4;
    Lock cl;
    if (!tt->lookup(name, &cl).ok()) return 5;
    if (cl.try_acquire().status.code() != Code::timed_out) return 6;  // a second holder
    return detail::encode_name_segment(name) == "%E9t%E9" ? 0 : 3;
  });
  CHECK(wait_child(kid) == 0);
  std::vector<LockInfo> listed;
  REQUIRE(t->list(&listed).ok());
  REQUIRE(listed.size() == 1);  // the child made no second name
  CHECK(listed[0].name == name);
  CHECK(l.release().ok());
}

namespace {

// Three members on loopback, each one stoppable and restartable.
class EtcdCluster {
 public:
  EtcdCluster() {
    const int base = testing::free_loopback_ports(6);
    std::string initial;
    for (int i = 0; i < 3; ++i) {
      clients_.push_back("127.0.0.1:" + std::to_string(base + 2 * i));
      peers_.push_back("http://127.0.0.1:" + std::to_string(base + 2 * i + 1));
      initial += (i ? "," : "") + name(i) + "=" + peers_[size_t(i)];
    }
    initial_ = initial;
    for (int i = 0; i < 3; ++i) start(i);
    const double until = testing::now_ms() + 20000;
    for (;;) {
      std::unique_ptr<Table> t;
      if (Table::open(url("ready"), {}, &t).ok()) break;
      if (testing::now_ms() > until) FAIL("the 3-member etcd did not start");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~EtcdCluster() {
    for (int i = 0; i < 3; ++i) stop(i, SIGTERM);
  }
  void start(int i) {
    pids_[i] = start_process({"etcd", "--data-dir", data_.path() + "/" + name(i), "--name", name(i),
                              "--listen-client-urls", "http://" + clients_[size_t(i)], "--advertise-client-urls",
                              "http://" + clients_[size_t(i)], "--listen-peer-urls", peers_[size_t(i)],
                              "--initial-advertise-peer-urls", peers_[size_t(i)], "--initial-cluster", initial_,
                              "--initial-cluster-state", "new"});
  }
  void stop(int i, int sig = SIGKILL) {
    if (pids_[i] <= 0) return;
    ::kill(pids_[i], sig);
    int status = 0;
    ::waitpid(pids_[i], &status, 0);
    pids_[i] = 0;
  }
  // The member that leads (asked of a live member), or -1.
  int leader() {
    for (int i = 0; i < 3; ++i) {
      if (pids_[i] <= 0) continue;
      const std::string out = "/tmp/lt-status-" + std::to_string(::getpid());
      if (run_shell("ETCDCTL_API=3 etcdctl --endpoints " + clients_[size_t(i)] +
                    " endpoint status -w json > " + out + " 2>/dev/null") != 0) {
        continue;
      }
      std::ifstream in(out);
      std::string text((std::istreambuf_iterator<char>(in)), {});
      std::filesystem::remove(out);
      // [{"Endpoint":..., "Status":{"header":{"member_id":M,...},"leader":L,...}}]
      auto field = [&](const std::string& key) {
        size_t p = text.find("\"" + key + "\":");
        return p == std::string::npos ? std::string() : text.substr(p + key.size() + 3, text.find_first_of(",}", p + key.size() + 3) - (p + key.size() + 3));
      };
      const std::string me = field("member_id"), lead = field("leader");
      if (me.empty() || lead.empty()) continue;
      if (me == lead) return i;
      // Another member leads: find which.
      for (int j = 0; j < 3; ++j) {
        if (j == i || pids_[j] <= 0) continue;
        if (run_shell("ETCDCTL_API=3 etcdctl --endpoints " + clients_[size_t(j)] + " endpoint status -w json 2>/dev/null"
                      " | grep -q '\"member_id\":" + lead + ",'") == 0) {
          return j;
        }
      }
    }
    return -1;
  }
  std::string url(const std::string& prefix) const {
    return "etcd://" + clients_[0] + "," + clients_[1] + "," + clients_[2] + "/" + prefix;
  }

 private:
  static std::string name(int i) { return "m" + std::to_string(i); }
  TempDir data_;
  std::vector<std::string> clients_, peers_;
  std::string initial_;
  pid_t pids_[3] = {0, 0, 0};
};

struct Inside {
  std::atomic<uint32_t> holder{0};  // pid inside the critical section, or 0
  std::atomic<int> overlaps{0};
  std::atomic<uint64_t> acquisitions{0};
  std::atomic<int> unexplained{0};  // a dead holder's mark found without being told abandoned
  std::atomic<bool> stop{false};
};

// Loops acquire, check, hold briefly, release; errors of a cluster in
// trouble (io_error, lock_lost) are retried, never counted as holding.
int locker(const std::string& url, Inside* in) {
  std::unique_ptr<Table> t;
  for (int tries = 0; !Table::open(url, {}, &t).ok(); ++tries) {
    if (tries > 50) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Lock l;
  while (!t->lookup("fleet", &l).ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const uint32_t me = uint32_t(::getpid());
  while (!in->stop.load()) {
    AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(5)));
    if (!r.held()) continue;
    uint32_t before = in->holder.exchange(me);
    if (before != 0) {
      // Inside already: only a dead holder may have left its mark, and then
      // this holder was told abandoned.
      if (::kill(pid_t(before), 0) == 0) in->overlaps.fetch_add(1);
      else if (!r.abandoned()) in->unexplained.fetch_add(1);
    }
    in->acquisitions.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    in->holder.store(0);
    if (r.abandoned()) (void)l.mark_consistent();
    (void)l.release();
  }
  return 0;
}

}  // namespace

TEST_CASE("etcd: 3 members, a follower then the leader killed while lockers run: locking goes on, one holder") {
  EtcdCluster cluster;
  const std::string url = cluster.url(fresh_prefix());
  { auto t = open_url(url); Lock l; REQUIRE(t->lookup("fleet", &l).ok()); }
  Inside* in = shared_memory<Inside>();
  std::vector<pid_t> kids;
  for (int i = 0; i < 3; ++i) kids.push_back(spawn([&] { return locker(url, in); }));
  auto progress_within = [&](double ms) {
    const uint64_t start = in->acquisitions.load();
    const double until = testing::now_ms() + ms;
    while (testing::now_ms() < until) {
      if (in->acquisitions.load() > start + 5) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  REQUIRE(progress_within(10000));
  int leader = cluster.leader();
  REQUIRE(leader >= 0);
  const int follower = (leader + 1) % 3;
  cluster.stop(follower);
  CHECK(progress_within(10000));
  cluster.start(follower);
  std::this_thread::sleep_for(std::chrono::seconds(2));  // it catches up
  leader = cluster.leader();
  REQUIRE(leader >= 0);
  cluster.stop(leader);
  CHECK(progress_within(15000));  // after the election
  in->stop = true;
  for (pid_t k : kids) CHECK(wait_child(k, 30000) == 0);
  CHECK(in->overlaps == 0);
  CHECK(in->unexplained == 0);
}

TEST_CASE("etcd: holders SIGKILLed in a loop: never two inside, every dead holder's mark found by one told abandoned") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  { auto t = open_url(url); Lock l; REQUIRE(t->lookup("fleet", &l).ok()); }
  Inside* in = shared_memory<Inside>();
  std::vector<pid_t> kids;
  for (int i = 0; i < 3; ++i) kids.push_back(spawn([&] { return locker(url, in); }));
  std::mt19937 rng(uint32_t(::getpid()));
  int kills = 0;
  const double until = testing::now_ms() + 12000;
  while (testing::now_ms() < until) {
    // Each kill stalls the lock for up to the TTL (2 s) when the victim holds
    // or waits: kill less often than that, so the others get through.
    std::this_thread::sleep_for(std::chrono::milliseconds(800 + rng() % 700));
    const size_t victim = rng() % kids.size();
    ::kill(kids[victim], SIGKILL);
    wait_child(kids[victim]);
    ++kills;
    kids[victim] = spawn([&] { return locker(url, in); });
  }
  in->stop = true;
  for (pid_t k : kids) CHECK(wait_child(k, 30000) == 0);
  INFO(kills << " kills, " << in->acquisitions.load() << " acquisitions");
  CHECK(kills >= 6);
  CHECK(in->acquisitions > 20);
  CHECK(in->overlaps == 0);
  CHECK(in->unexplained == 0);
}

namespace {

// A process that takes `first`, says so, waits for `go`, then takes `second`:
// exits 0 when it got both, 7 when told deadlock (having released `first`).
int cycle_member(const std::string& url, std::chrono::milliseconds detect, const std::string& first,
                 const std::string& second, const Pipe& ready, const Pipe& go, const Pipe& told) {
  Options o;
  o.deadlock_timeout = detect;
  std::unique_ptr<Table> t;
  if (!Table::open(url, o, &t).ok()) return 1;
  Lock a, b;
  if (!t->lookup(first, &a).ok() || !t->lookup(second, &b).ok() || !a.acquire().held()) return 2;
  ready.send();
  if (go.receive(20000) != '.') return 3;
  AcquireResult r = b.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30)));
  if (r.status.code() == Code::deadlock) {
    told.send('D');
    return a.release().ok() ? 7 : 4;
  }
  if (!r.held()) return 5;
  told.send(r.abandoned() ? 'A' : 'H');
  (void)b.release();
  (void)a.release();
  return 0;
}

}  // namespace

TEST_CASE("etcd: a 2-process and a 3-process cycle each end with exactly one deadlock; the others acquire") {
  for (int members : {2, 3}) {
    INFO(members << " members");
    const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
    Pipe ready, go, told;
    std::vector<pid_t> kids;
    for (int i = 0; i < members; ++i) {
      const std::string first = "L" + std::to_string(i), second = "L" + std::to_string((i + 1) % members);
      kids.push_back(spawn([&, first, second] {
        return cycle_member(url, std::chrono::milliseconds(300), first, second, ready, go, told);
      }));
    }
    for (int i = 0; i < members; ++i) {
      if (ready.receive(20000) != '.') {
        std::string codes;
        for (pid_t k : kids) codes += std::to_string(wait_child(k, 1000)) + " ";
        FAIL("a member did not take its first lock; exits: " + codes);
      }
    }
    const double start = testing::now_ms();
    for (int i = 0; i < members; ++i) go.send();
    std::string results;
    for (int i = 0; i < members; ++i) results += told.receive(30000);
    const double took = testing::now_ms() - start;
    int deadlocks = 0, clean = 0;
    for (pid_t k : kids) {
      const int rc = wait_child(k, 30000);
      deadlocks += rc == 7;
      clean += rc == 0;
    }
    INFO(results << " after " << took << " ms");
    CHECK(deadlocks == 1);
    CHECK(clean == members - 1);
    CHECK(std::count(results.begin(), results.end(), 'D') == 1);
    CHECK(std::count(results.begin(), results.end(), 'H') == members - 1);
    // After deadlock_timeout, the members' leases (TTL 2 s, renewed every 0.67 s) are seen renewed.
    CHECK(took < 300 + 3000);
    auto t = open_url(url);
    std::vector<Event> events;
    HistoryQuery q;
    q.kind = EventKind::deadlock;
    REQUIRE(t->history(q, &events).ok());
    CHECK(events.size() == 1);
  }
}

TEST_CASE("etcd: a cycle through a dead member is no deadlock: the waiter is told abandoned after the TTL") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  Pipe ready, go, told;
  // The second member never looks (deadlock_timeout 0) and is killed once both
  // wait, before the first looks (its keys stay until its lease runs out).
  pid_t looker = spawn([&] { return cycle_member(url, std::chrono::milliseconds(700), "A", "B", ready, go, told); });
  pid_t victim = spawn([&] { return cycle_member(url, std::chrono::milliseconds(0), "B", "A", ready, go, told); });
  REQUIRE(ready.receive(20000) == '.');
  REQUIRE(ready.receive(20000) == '.');
  go.send();
  go.send();
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ::kill(victim, SIGKILL);
  wait_child(victim);
  CHECK(told.receive(30000) == 'A');  // B, from the dead member: abandoned, never deadlock
  CHECK(wait_child(looker, 30000) == 0);
}

TEST_CASE("etcd: a chain of waits that closes no cycle is never a deadlock") {
  const std::string url = etcd().url(fresh_prefix(), "?ttl=2");
  Options o;
  o.deadlock_timeout = std::chrono::milliseconds(100);
  std::unique_ptr<Table> t;
  REQUIRE(Table::open(url, o, &t).ok());
  Lock a;
  REQUIRE(t->lookup("A", &a).ok());
  REQUIRE(a.acquire().held());
  Pipe ready, go, told;
  // B's holder waits for A (held here, not waiting): a chain, no cycle.
  pid_t kid = spawn([&] { return cycle_member(url, std::chrono::milliseconds(100), "B", "A", ready, go, told); });
  REQUIRE(ready.receive(20000) == '.');
  go.send();
  CHECK(told.receive(2500) == 0);  // still waiting after many looks
  REQUIRE(a.release().ok());
  CHECK(told.receive(20000) == 'H');
  CHECK(wait_child(kid, 20000) == 0);
}

TEST_CASE("etcd: processes opening a new table at the same moment all get it (one creates it)") {
  for (int round = 0; round < 3; ++round) {
    const std::string url = etcd().url(fresh_prefix());
    std::atomic<int>* go = shared_memory<std::atomic<int>>();
    std::vector<pid_t> kids;
    for (int i = 0; i < 6; ++i) {
      kids.push_back(spawn([&] {
        while (go->load() == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
        std::unique_ptr<Table> t;
        Lock l;
        if (!Table::open(url, {}, &t).ok()) return 1;
        // Keys of the new table (a name, a queue) do not make it look foreign to the others.
        return t->lookup("n", &l).ok() && l.acquire().held() && l.release().ok() ? 0 : 2;
      }));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    go->store(1);
    for (pid_t k : kids) CHECK(wait_child(k, 20000) == 0);
  }
}

namespace {

size_t collect_body(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Range requests etcd has answered so far (its Prometheus metrics).
long ranges_answered(const std::string& client) {
  CURL* curl = curl_easy_init();
  std::string body;
  const std::string url = "http://" + client + "/metrics";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  const CURLcode rc = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) return -1;
  const std::string key = "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\"";
  const size_t at = body.find(key);
  if (at == std::string::npos) return -1;
  return std::atol(body.c_str() + body.find("} ", at) + 2);
}

}  // namespace

TEST_CASE("etcd: a waiter watches its queue instead of asking etcd every few milliseconds") {
  const std::string url = etcd().url(fresh_prefix());
  auto t = open_url(url);
  Lock l;
  REQUIRE(t->lookup("long", &l).ok());
  REQUIRE(l.acquire().held());
  Pipe got;
  pid_t waiter = spawn([&] {
    Options o;
    o.deadlock_timeout = std::chrono::milliseconds(0);
    std::unique_ptr<Table> tt;
    Lock cl;
    if (!Table::open(url, o, &tt).ok() || !tt->lookup("long", &cl).ok()) return 1;
    if (!cl.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30))).held()) return 2;
    got.send();
    return cl.release().ok() ? 0 : 3;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // past its first quick polls
  const long before = ranges_answered(etcd().client());
  REQUIRE(before >= 0);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const long during = ranges_answered(etcd().client()) - before;
  INFO(during << " range requests in 3 s of waiting");
  CHECK(during < 20);  // polling every 20 ms would be about 150
  REQUIRE(l.release().ok());
  CHECK(got.receive(5000) == '.');  // the release ends the watch: it gets in
  CHECK(wait_child(waiter, 10000) == 0);
}
