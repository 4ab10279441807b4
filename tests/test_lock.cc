// Acquire/release semantics within one process (threads), names and handles.
#include <catch2/catch.hpp>
#include <signal.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <shared_mutex>
#include <thread>

#include "helpers.h"
#include "locktable/names.h"

using namespace locktable;
using testing::check_prefix_listing;
using testing::open_table;
using testing::TempDir;

TEST_CASE("acquire, release, and the status of each misuse") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("orders", &a).ok());
  CHECK(a.name() == "orders");

  AcquireResult r = a.acquire();
  CHECK(r.status.ok());
  CHECK(r.held());
  CHECK_FALSE(r.abandoned());

  SECTION("re-acquire by the same thread is already_held, not a deadlock or a recursion") {
    AcquireResult again = a.acquire();
    CHECK(again.status.code() == Code::already_held);
    CHECK_FALSE(again.held());
    CHECK(a.release().ok());
    CHECK(a.release().code() == Code::not_owner);  // no hidden recursion count
  }
  SECTION("release by another thread is not_owner and changes nothing") {
    Status other;
    std::thread([&] { other = a.release(); }).join();
    CHECK(other.code() == Code::not_owner);
    AcquireResult by_other;
    std::thread([&] { by_other = a.try_acquire(); }).join();
    CHECK(by_other.status.code() == Code::timed_out);  // still held by us
    CHECK(a.release().ok());
  }
  SECTION("a second handle to the same name is the same lock") {
    Lock b;
    REQUIRE(t->lookup("orders", &b, Lookup::existing).ok());
    CHECK(b.slot() == a.slot());
    CHECK(b.acquire().status.code() == Code::already_held);
    CHECK(b.release().ok());
  }
}

TEST_CASE("try and timed acquire give up") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("jobs", &a).ok());
  REQUIRE(a.acquire().status.ok());
  std::thread([&] {
    CHECK(a.try_acquire().status.code() == Code::timed_out);
    double start = testing::now_ms();
    AcquireResult r = a.acquire(Mode::exclusive, Deadline::after(std::chrono::milliseconds(150)));
    double waited = testing::now_ms() - start;
    CHECK(r.status.code() == Code::timed_out);
    CHECK(waited >= 140);
    CHECK(waited < 5000);
    CHECK_FALSE(a.try_lock_for(std::chrono::milliseconds(20)));
    CHECK_FALSE(a.try_lock());
  }).join();
  CHECK(a.release().ok());
}

TEST_CASE("a timeout or time point past the clock's range is a wait for ever or none, never a wrapped-around count") {
  using std::chrono::duration;
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(Deadline::after(duration<double>(inf)).is_never());
  CHECK(Deadline::after(duration<double>(1e300)).is_never());
  CHECK(Deadline::after(duration<double>(1e12)).is_never());  // 31,000 years of nanoseconds: past int64
  CHECK(Deadline::after(std::chrono::seconds::max()).is_never());
  CHECK(Deadline::after(std::chrono::hours(24 * 365 * 1000)).is_never());
  CHECK(Deadline::after(duration<double>(std::nan(""))).is_now());  // no number: no wait
  CHECK(Deadline::after(duration<double>(-inf)).is_now());
  const auto before = Deadline::clock::now();
  const Deadline ten_years = Deadline::after(std::chrono::hours(24 * 3650));
  CHECK_FALSE(ten_years.is_never());
  CHECK(ten_years.when() - before >= std::chrono::hours(24 * 3650));
  CHECK(ten_years.when() - before < std::chrono::hours(24 * 3650) + std::chrono::seconds(5));
  // Time points of other clocks, at and past their ends.
  using std::chrono::system_clock;
  CHECK(Deadline::until(system_clock::time_point::min()).is_now());
  CHECK(Deadline::until(system_clock::time_point::max()).is_never());
  CHECK(Deadline::until(std::chrono::time_point<system_clock, std::chrono::seconds>::max()).is_never());
  CHECK(Deadline::until(std::chrono::time_point<system_clock, std::chrono::seconds>::min()).is_now());
  CHECK(Deadline::until(system_clock::now() - std::chrono::seconds(1)).is_now());
  const Deadline soon = Deadline::until(system_clock::now() + std::chrono::seconds(2));
  CHECK_FALSE(soon.is_never());
  CHECK(soon.when() - Deadline::clock::now() > std::chrono::milliseconds(1500));
  CHECK(soon.when() - Deadline::clock::now() <= std::chrono::seconds(2));

  // A waiter given such a timeout waits, and gets the lock when it is released.
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("jobs", &a).ok());
  REQUIRE(a.acquire().status.ok());
  // A time point long past gives up at once (it used to wrap around into a
  // wait for ever: this one would get the lock when it is released below).
  std::atomic<int> past{-1};
  std::thread past_waiter([&] {
    if (a.try_lock_until(system_clock::time_point::min())) {
      past = 1;
      (void)a.release();
      return;
    }
    const Deadline oldest = Deadline::at(Deadline::clock::time_point::min() + std::chrono::nanoseconds(1));
    AcquireResult r = a.acquire(Mode::exclusive, oldest);
    past = r.status.code() == Code::timed_out ? 0 : 2;
    if (r.held()) (void)a.release();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(past.load() == 0);  // done, not waiting
  std::atomic<int> got{-1};
  std::thread waiter([&] {
    got = a.try_lock_for(duration<double>(1e300)) ? 1 : 0;
    if (got == 1) (void)a.release();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(got.load() == -1);  // still waiting, not given up
  CHECK(a.release().ok());
  waiter.join();
  past_waiter.join();
  CHECK(got.load() == 1);
}

namespace {

volatile sig_atomic_t usr1_seen = 0;
void on_usr1(int) { usr1_seen = 1; }

// Stops when SIGUSR1 has been handled.
struct SignalInterrupt final : WaitInterrupt {
  bool requested() override { return usr1_seen != 0; }
};

}  // namespace

TEST_CASE("a wait ends with interrupted when its WaitInterrupt says so, leaving the lock as a timeout does") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  REQUIRE(t->lookup("queue", &l).ok());
  testing::FlagInterrupt f;
  const Deadline forever = Deadline::never().interruptible_by(&f);

  SECTION("an exclusive waiter, the holder in another process") {
    pid_t holder = testing::spawn_holder(tmp.table(), "queue", Mode::exclusive);
    std::thread stopper([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      f.stop = true;
    });
    double start = testing::now_ms();
    AcquireResult r = l.acquire(Mode::exclusive, forever);
    double waited = testing::now_ms() - start;
    stopper.join();
    CHECK(r.status.code() == Code::interrupted);
    CHECK_FALSE(r.held());
    CHECK(r.status.message().find("interrupted") != std::string::npos);
    CHECK(waited >= 190);
    CHECK(waited < 2000);
    CHECK(f.asks.load() >= 4);  // asked while it waited, not only once
    // The holder still holds; once it dies the next acquire is told so.
    CHECK(l.try_acquire().status.code() == Code::timed_out);
    ::kill(holder, SIGKILL);
    CHECK(testing::wait_child(holder) == 128 + SIGKILL);
    testing::expect_takeover(l, holder);
    CHECK(l.mark_consistent().ok());
    CHECK(l.release().ok());
  }
  SECTION("an interrupted writer no longer keeps new readers out") {
    pid_t reader = testing::spawn_holder(tmp.table(), "queue", Mode::shared);
    Code writer_code = Code::ok;
    std::thread writer([&] { writer_code = l.acquire(Mode::exclusive, forever).status.code(); });
    // While the writer waits, a new reader is kept out ...
    bool kept_out = false;
    for (int i = 0; i < 200 && !kept_out; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      pid_t probe = testing::spawn([&] {
        std::unique_ptr<Table> tt;
        Lock pl = testing::child_lock(tmp.table(), "queue", &tt);
        AcquireResult pr = pl.try_acquire(Mode::shared);
        if (pr.held()) (void)pl.release(Mode::shared);
        return pr.held() ? 1 : 0;
      });
      kept_out = testing::wait_child(probe) == 0;
    }
    CHECK(kept_out);
    f.stop = true;
    writer.join();
    CHECK(writer_code == Code::interrupted);
    // ... and once it gave up, readers get in again.
    Lock r2;
    REQUIRE(t->lookup("queue", &r2).ok());
    AcquireResult in = r2.try_acquire(Mode::shared);
    CHECK(in.status.ok());
    CHECK(r2.release(Mode::shared).ok());
    ::kill(reader, SIGKILL);
    testing::wait_child(reader);
  }
  SECTION("a shared waiter, behind a writer in another process") {
    pid_t holder = testing::spawn_holder(tmp.table(), "queue", Mode::exclusive);
    std::thread stopper([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      f.stop = true;
    });
    AcquireResult r = l.acquire(Mode::shared, forever);
    stopper.join();
    CHECK(r.status.code() == Code::interrupted);
    ::kill(holder, SIGKILL);
    testing::wait_child(holder);
    AcquireResult after = l.acquire(Mode::shared, Deadline::after(std::chrono::seconds(5)));
    CHECK(after.status.code() == Code::abandoned);  // the writer died: the reader is told
    CHECK(l.release(Mode::shared).ok());
  }
  SECTION("a signal handler's flag ends the wait at once, although the deadline is far") {
    pid_t holder = testing::spawn_holder(tmp.table(), "queue", Mode::exclusive);
    struct sigaction sa {};
    sa.sa_handler = on_usr1;  // no SA_RESTART: the futex sleep ends with EINTR
    struct sigaction old {};
    REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);
    usr1_seen = 0;
    SignalInterrupt by_signal;
    double start = 0, waited = 0;
    AcquireResult r;
    std::thread waiter([&] {
      start = testing::now_ms();
      r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(30)).interruptible_by(&by_signal));
      waited = testing::now_ms() - start;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // asleep on the futex by now
    double sent = testing::now_ms();
    ::pthread_kill(waiter.native_handle(), SIGUSR1);
    waiter.join();
    ::sigaction(SIGUSR1, &old, nullptr);
    CHECK(r.status.code() == Code::interrupted);
    CHECK(start + waited - sent < 1000);
    ::kill(holder, SIGKILL);
    testing::wait_child(holder);
  }
  SECTION("a std::jthread's request_stop() ends its wait (StopTokenInterrupt)") {
    pid_t holder = testing::spawn_holder(tmp.table(), "queue", Mode::shared);
    Code code = Code::ok;
    std::jthread waiter([&](std::stop_token token) {
      StopTokenInterrupt stop(token);
      code = l.acquire(Mode::exclusive, Deadline::never().interruptible_by(&stop)).status.code();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const double asked = testing::now_ms();
    waiter.request_stop();
    waiter.join();
    CHECK(testing::now_ms() - asked < 1000);
    CHECK(code == Code::interrupted);
    ::kill(holder, SIGKILL);
    testing::wait_child(holder);
  }
  SECTION("a try, or a free lock, never asks") {
    f.stop = true;
    pid_t holder = testing::spawn_holder(tmp.table(), "queue", Mode::exclusive);
    CHECK(l.acquire(Mode::exclusive, Deadline::now().interruptible_by(&f)).status.code() == Code::timed_out);
    ::kill(holder, SIGKILL);
    testing::wait_child(holder);
    testing::expect_takeover(l, holder);
    CHECK(l.mark_consistent().ok());
    CHECK(l.release().ok());
    CHECK(l.acquire(Mode::exclusive, forever).status.ok());
    CHECK(l.release().ok());
    CHECK(l.acquire(Mode::shared, forever).status.ok());
    CHECK(l.release(Mode::shared).ok());
    CHECK(f.asks.load() == 0);
  }
  // No wait of this thread stays published.
  std::vector<LockInfo> locks;
  REQUIRE(t->list(&locks).ok());
  for (const LockInfo& info : locks) CHECK(info.waiting.empty());
}

TEST_CASE("a blocked thread gets the lock when it is released") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a;
  REQUIRE(t->lookup("jobs", &a).ok());
  REQUIRE(a.acquire().status.ok());
  // (Catch2 assertions only on the main thread: it is not thread-safe.)
  std::atomic<bool> got{false}, acquired_ok{false}, released_ok{false};
  std::thread waiter([&] {
    AcquireResult r = a.acquire();
    acquired_ok = r.status.ok();
    got = true;
    released_ok = a.release().ok();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(got.load());
  CHECK(a.release().ok());
  waiter.join();
  CHECK(got.load());
  CHECK(acquired_ok.load());
  CHECK(released_ok.load());
}

TEST_CASE("the handle works with std::unique_lock, std::scoped_lock and std::shared_lock") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a, b;
  REQUIRE(t->lookup("a", &a).ok());
  REQUIRE(t->lookup("b", &b).ok());
  {
    std::unique_lock<Lock> ul(a);
    CHECK(ul.owns_lock());
    CHECK(a.acquire().status.code() == Code::already_held);
  }
  CHECK(a.try_acquire().status.ok());
  CHECK(a.release().ok());
  {
    std::scoped_lock both(a, b);
    std::thread([&] {
      CHECK_FALSE(a.try_lock());
      CHECK_FALSE(b.try_lock());
    }).join();
  }
  {
    std::shared_lock<Lock> s1(a);
    std::thread([&] {
      std::shared_lock<Lock> s2(a, std::try_to_lock);
      CHECK(s2.owns_lock());              // readers share
      CHECK_THROWS_AS(a.try_lock(), Error);  // no upgrade of a shared hold
    }).join();
    std::thread([&] { CHECK_FALSE(a.try_lock()); }).join();  // a writer waits for the readers
  }
  std::unique_lock<Lock> timed(a, std::chrono::milliseconds(10));
  CHECK(timed.owns_lock());
  CHECK_THROWS_AS(a.lock(), Error);  // already held: an exception, not a deadlock
}

TEST_CASE("names are validated") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock l;
  CHECK(t->lookup("", &l).code() == Code::invalid_argument);
  CHECK(t->lookup(std::string(256, 'x'), &l).code() == Code::invalid_argument);
  CHECK(t->lookup(std::string("a\0b", 3), &l).code() == Code::invalid_argument);
  CHECK(t->lookup(std::string(255, 'x'), &l).ok());
  CHECK(t->lookup("\xff\xfe binary is fine", &l).ok());
  CHECK(t->lookup("missing", &l, Lookup::existing).code() == Code::not_found);
  Lock empty;
  CHECK(empty.acquire().status.code() == Code::invalid_argument);
}

// nlohmann-json's own check, the one whose throw is_utf8() exists to avoid.
static bool json_accepts(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

TEST_CASE("is_utf8 accepts exactly what JSON accepts") {
  // Every string of one and two bytes, then every lead byte followed by
  // continuation-range bytes (overlong forms, surrogates, > U+10FFFF), then
  // random strings biased towards bytes above 0x7f.
  for (int a = 0; a < 256; ++a) {
    std::string one(1, char(a));
    REQUIRE(is_utf8(one) == json_accepts(one));
    for (int b = 0; b < 256; ++b) {
      std::string two{char(a), char(b)};
      INFO("bytes " << a << " " << b);
      REQUIRE(is_utf8(two) == json_accepts(two));
    }
  }
  for (int lead = 0xc0; lead < 0x100; ++lead) {
    for (int b = 0x70; b < 0xd0; ++b) {
      for (int c = 0x70; c < 0xd0; c += 3) {
        std::string three{char(lead), char(b), char(c)};
        std::string four{char(lead), char(b), char(c), char(0x80 + (c & 0x3f))};
        INFO("bytes " << lead << " " << b << " " << c);
        REQUIRE(is_utf8(three) == json_accepts(three));
        REQUIRE(is_utf8(four) == json_accepts(four));
      }
    }
  }
  std::mt19937 random(42);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s(1 + random() % 12, '\0');
    for (char& c : s) c = char(random() % 3 == 0 ? random() % 0x80 : 0x80 + random() % 0x80);
    if (random() % 2 == 0) s = "\xf0\x9f\x94\x92 " + s;  // a valid 4-byte form first
    bool ours = is_utf8(s);
    INFO("string " << escape_name(s));
    REQUIRE(ours == json_accepts(s));
    accepted += ours;
  }
  CHECK(accepted > 100);  // the random half is not all rejects
  CHECK(is_utf8(""));
  CHECK(is_utf8("orders/2026 \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92"));
}

TEST_CASE("a handle to a removed or re-created name fails cleanly") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock old;
  REQUIRE(t->lookup("cache", &old).ok());
  REQUIRE(old.acquire().status.ok());
  CHECK(t->remove("cache").code() == Code::busy);  // held: refused
  REQUIRE(old.release().ok());
  REQUIRE(t->remove("cache").ok());
  CHECK(t->remove("cache").code() == Code::not_found);
  CHECK(old.acquire().status.code() == Code::stale_handle);

  // The freed slot goes to a new name; the old handle must not lock it.
  Lock other;
  REQUIRE(t->lookup("somebody-else", &other).ok());
  CHECK(other.slot() == old.slot());
  CHECK(old.acquire().status.code() == Code::stale_handle);
  CHECK(old.try_acquire(Mode::shared).status.code() == Code::stale_handle);
  REQUIRE(other.acquire().status.ok());
  CHECK(old.release().code() == Code::stale_handle);  // never releases the new name's hold
  CHECK(old.release(Mode::shared).code() == Code::stale_handle);
  CHECK(other.release().ok());

  // Re-creating the same name gives a new incarnation; the old handle stays stale.
  REQUIRE(t->remove("somebody-else").ok());
  Lock again;
  REQUIRE(t->lookup("cache", &again).ok());
  CHECK(old.acquire().status.code() == Code::stale_handle);
  CHECK(again.acquire().status.ok());
  CHECK(again.release().ok());
}

TEST_CASE("a waiter never hangs when the name is removed under it") {
  // The holder releases and removes at once: the waiter either wins the lock
  // first (then releases it), or wakes to find the name gone (stale_handle).
  TempDir tmp;
  auto t = open_table(tmp.table());
  for (int round = 0; round < 20; ++round) {
    Lock a;
    REQUIRE(t->lookup("x", &a).ok());
    REQUIRE(a.acquire().status.ok());
    std::atomic<int> outcome{-1};
    std::thread waiter([&] {
      AcquireResult r = a.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(20)));
      if (r.status.ok() && !a.release().ok()) {
        outcome = -2;  // checked below, on the main thread
        return;
      }
      outcome = int(r.status.code());
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(a.release().ok());
    Status s;
    while ((s = t->remove("x")).code() == Code::busy) std::this_thread::yield();
    CHECK(s.ok());
    waiter.join();
    CHECK((outcome == int(Code::ok) || outcome == int(Code::stale_handle)));
    CHECK(a.acquire().status.code() == Code::stale_handle);
  }
}

TEST_CASE("list with a prefix names exactly the names that begin with it, held or not") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  check_prefix_listing(*t);
}

TEST_CASE("list shows holders and state") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  Lock a, b;
  REQUIRE(t->lookup("alpha", &a).ok());
  REQUIRE(t->lookup("beta", &b).ok());
  REQUIRE(a.acquire().status.ok());
  REQUIRE(b.acquire(Mode::shared).status.ok());
  std::vector<LockInfo> ls;
  REQUIRE(t->list(&ls).ok());
  REQUIRE(ls.size() == 2);
  CHECK(ls[0].name == "alpha");
  CHECK(ls[0].state == LockState::held);
  REQUIRE(ls[0].holders.size() == 1);
  CHECK(ls[0].holders[0].owner.pid == uint32_t(::getpid()));
  CHECK(ls[0].holders[0].owner.tid == uint32_t(::gettid()));
  CHECK(ls[0].holders[0].alive);
  CHECK(ls[1].state == LockState::shared);
  CHECK(ls[1].mode == Mode::shared);
  CHECK(ls[1].holders.size() == 1);
  CHECK(a.release().ok());
  CHECK(b.release(Mode::shared).ok());
  REQUIRE(t->list(&ls).ok());
  CHECK(ls[0].state == LockState::free);
  CHECK(ls[1].state == LockState::free);
}
