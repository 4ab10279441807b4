// The backend seam: a location chooses its backend, an unknown scheme is a
// clear error naming it, options are checked before anything is created; and
// WaitClock, the waiters' clock every backend may use.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "backend_registry.h"
#include "clock.h"
#include "helpers.h"
#include "wait_clock.h"

using namespace locktable;
using testing::TempDir;

namespace {

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("seam: an unknown location scheme is unsupported, naming the scheme, and creates nothing") {
  TempDir tmp;
  std::unique_ptr<Table> t;
  const std::string location = "foo://" + tmp.path() + "/x";
  Status s = Table::open(location, {}, &t);
  CHECK(s.code() == Code::unsupported);
  CHECK_THAT(s.message(), Catch::Contains("'foo'"));
  CHECK_THAT(s.message(), Catch::Contains(location));
  CHECK(t == nullptr);
  CHECK(!exists("foo:"));
  CHECK(!exists(tmp.path() + "/x"));
}

TEST_CASE("seam: a file:// URL opens the same table as its path") {
  TempDir tmp;
  auto by_path = testing::open_table(tmp.table());
  Lock a;
  REQUIRE(by_path->lookup("orders", &a).ok());
  REQUIRE(a.acquire().status.ok());

  auto by_url = testing::open_table("file://" + tmp.table());
  CHECK(by_url->dir() == "file://" + tmp.table());
  auto upper = testing::open_table("FILE://" + tmp.table());  // a scheme in any case (RFC 3986)
  Lock c;
  REQUIRE(upper->lookup("orders", &c, Lookup::existing).ok());
  CHECK(c.slot() == a.slot());
  Lock b;
  REQUIRE(by_url->lookup("orders", &b, Lookup::existing).ok());
  CHECK(b.slot() == a.slot());
  std::thread other([&] { CHECK(b.try_acquire().status.code() == Code::timed_out); });
  other.join();
  CHECK(a.release().ok());

  std::unique_ptr<Table> t;
  Status s = Table::open("file://relative/folder", {}, &t);
  CHECK(s.code() == Code::invalid_argument);
  CHECK_THAT(s.message(), Catch::Contains("absolute path"));
  CHECK(!exists("relative"));
}

TEST_CASE("seam: a file:// URL's path is percent-encoded; bad escapes, %00, a query or a fragment are refused") {
  TempDir tmp;
  const std::string folder = tmp.path() + "/my locks #1";
  auto by_path = testing::open_table(folder);
  Lock a;
  REQUIRE(by_path->lookup("orders", &a).ok());
  // As Python's Path.as_uri() writes it.
  auto by_url = testing::open_table("file://" + tmp.path() + "/my%20locks%20%231");
  Lock b;
  REQUIRE(by_url->lookup("orders", &b, Lookup::existing).ok());
  CHECK(b.slot() == a.slot());
  for (const char* bad : {"/x%2", "/x%zz", "/x%00y", "/x?mode=ro", "/x#frag"}) {
    const std::string url = "file://" + tmp.path() + bad;
    std::unique_ptr<Table> t;
    Status s = Table::open(url, {}, &t);
    INFO(url << ": " << s.to_string());
    CHECK(s.code() == Code::invalid_argument);
    CHECK_THAT(s.message(), Catch::Contains(url));
  }
  CHECK(std::distance(std::filesystem::directory_iterator(tmp.path()), {}) == 1);  // nothing else was created
}

TEST_CASE("seam: a scheme is letters, digits, + - . before ://, else the location is a path") {
  using detail::location_scheme;
  CHECK(location_scheme("etcd://h:2379/p") == "etcd");
  CHECK(location_scheme("file:///var/lib/x") == "file");
  CHECK(location_scheme("svn+ssh://x") == "svn+ssh");
  CHECK(location_scheme("/var/lib/x") == "");
  CHECK(location_scheme("./a://b") == "");
  CHECK(location_scheme("://x") == "");
  CHECK(location_scheme("1abc://x") == "");
  CHECK(location_scheme("a b://x") == "");
}

TEST_CASE("seam: bad options are refused before the folder or any file is created") {
  TempDir tmp;
  const std::string dir = tmp.path() + "/never";
  auto refused = [&](Options o, const char* naming) {  // the message names the option
    std::unique_ptr<Table> t;
    Status s = Table::open(dir, o, &t);
    CHECK(s.code() == Code::invalid_argument);
    CHECK_THAT(s.message(), Catch::Contains(dir) && Catch::Contains(naming));
    CHECK(!exists(dir));
  };
  Options o;
  o.ring_entries = 100;  // not a power of two
  refused(o, "ring_entries 100");
  o = Options{};
  o.max_slots = uint64_t{1} << 31;
  refused(o, "max_slots 2147483648");
  o = Options{};
  o.initial_slots = 0;
  refused(o, "initial_slots 0");
  o = Options{};
  o.initial_slots = (uint32_t{1} << 30) + 1;
  refused(o, "initial_slots 1073741825");
  o = Options{};
  o.history = HistoryLevel(7);
  refused(o, "history level 7");
  o = Options{};
  o.lmdb_map_size = 4096;
  refused(o, "lmdb_map_size");
  o.lmdb_map_size = SIZE_MAX;  // more than any address space
  refused(o, "lmdb_map_size 18446744073709551615");
  o = Options{};
  o.retention_age = std::chrono::seconds(-1);
  refused(o, "retention_age");
  std::unique_ptr<Table> t;
  CHECK(Table::open("", {}, &t).code() == Code::invalid_argument);
}

TEST_CASE("wait clock: a try never waits and never reads the clock") {
  detail::WaitClock c(Deadline::now());
  CHECK(c.expired());
  CHECK(c.waited_ns() == 0);
  c.tick();
  CHECK(c.expired());
  CHECK(c.sleep_ns() == 0);
}

TEST_CASE("wait clock: a deadline expires on time, and sleeps never overshoot it") {
  detail::WaitClock c(Deadline::after(std::chrono::milliseconds(30)));
  c.tick();
  CHECK(!c.expired());
  CHECK(c.sleep_ns() <= 30'000'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(35));
  c.tick();
  CHECK(c.expired());
  CHECK(c.sleep_ns() == 0);
  CHECK(c.waited_ns() >= 35'000'000);
}

TEST_CASE("wait clock: an interrupt is asked at most every millisecond; once it says stop the wait is interrupted") {
  testing::FlagInterrupt f;
  detail::WaitClock c(Deadline::after(std::chrono::seconds(30)).interruptible_by(&f));
  for (int i = 0; i < 1000; ++i) c.tick();  // far less than a millisecond for most of them
  CHECK(f.asks.load() >= 1);
  CHECK(f.asks.load() < 50);
  CHECK(!c.expired());
  CHECK(c.expiry() == Code::timed_out);
  CHECK(c.sleep_ns() <= detail::kMaxCheckNs);
  f.stop = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  c.tick();
  CHECK(c.expired());
  CHECK(c.expiry() == Code::interrupted);
  const int asked = f.asks.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  c.tick();
  CHECK(f.asks.load() == asked);  // not asked again once it said stop
  detail::WaitClock try_clock(Deadline::now().interruptible_by(&f));
  try_clock.tick();
  CHECK(try_clock.expiry() == Code::timed_out);  // a try never asks
  CHECK(f.asks.load() == asked);
}

TEST_CASE("wait clock: liveness checks come 1 ms after watching starts, then at doubling intervals up to 50 ms") {
  detail::WaitClock c(Deadline::never());
  c.tick();
  CHECK(!c.check_due(7));  // starts watching holder 7
  CHECK(c.sleep_ns() <= detail::kFirstCheckNs);
  CHECK(c.sleep_ns() > 0);
  std::vector<int64_t> gaps;
  uint64_t last = detail::monotonic_ns();
  while (gaps.size() < 8) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(c.sleep_ns(), 100'000)));
    c.tick();
    if (c.check_due(7)) {
      uint64_t now = detail::monotonic_ns();
      gaps.push_back(int64_t(now - last));
      last = now;
    }
  }
  // 1, 2, 4, 8, 16, 32, 50, 50 ms (each at least its interval, with slack for scheduling).
  const int64_t want[] = {1, 2, 4, 8, 16, 32, 50, 50};
  for (size_t i = 0; i < gaps.size(); ++i) {
    INFO("check " << i << " came after " << gaps[i] / 1000 << " us");
    CHECK(gaps[i] >= want[i] * 1'000'000 - 200'000);
    CHECK(gaps[i] <= want[i] * 1'000'000 + 30'000'000);
  }
  CHECK(!c.check_due(8));  // another holder: watched afresh, first check 1 ms later
  CHECK(c.sleep_ns() <= detail::kFirstCheckNs);
}
