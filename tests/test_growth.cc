// Online growth with real processes: the table grows from 8 slots to 100,000+
// while others lock and allocate; a grower killed at any step leaves a table
// the next grower completes; racing growers; stale mappings.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <thread>

#include "crash_point.h"
#include "helpers.h"
#include "header_check.h"
#include "table_file.h"

using namespace locktable;
using testing::child_lock;
using testing::open_table;
using testing::Pipe;
using testing::spawn;
using testing::TempDir;
using testing::wait_child;

namespace {

Options small() {
  Options o;
  o.initial_slots = 8;
  return o;
}

struct Counters {
  std::atomic<bool> stop{false};
  volatile uint64_t count[4] = {0, 0, 0, 0};
  std::atomic<int> inside[4] = {0, 0, 0, 0};
  std::atomic<int> overlaps{0};
  std::atomic<uint64_t> ops{0};
  std::atomic<int> created{0};
};

std::vector<std::string> names(const std::string& prefix, int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

void expect_unique_slots(Table& t, size_t expected_names) {
  std::vector<LockInfo> ls;
  REQUIRE(t.list(&ls).ok());
  CHECK(ls.size() == expected_names);
  std::set<uint32_t> slots;
  for (const LockInfo& l : ls) slots.insert(l.slot);
  CHECK(slots.size() == ls.size());  // no slot given to two names
  std::vector<std::string> problems;
  REQUIRE(t.check(&problems).ok());
  for (const auto& p : problems) UNSCOPED_INFO(p);
  CHECK(problems.empty());
}

}  // namespace

TEST_CASE("growth: 8 to 100,000+ slots while other processes lock and allocate") {
  TempDir tmp;
  auto t = open_table(tmp.table(), small());
  std::vector<Lock> fixed;
  REQUIRE(t->lookup(names("fixed-", 0, 4), &fixed).ok());
  auto* c = new (::mmap(nullptr, sizeof(Counters), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0))
      Counters();

  std::vector<pid_t> lockers;
  for (int p = 0; p < 3; ++p) {
    lockers.push_back(spawn([&, p] {
      std::unique_ptr<Table> tt;
      if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
      std::vector<Lock> mine;
      if (!tt->lookup(names("fixed-", 0, 4), &mine).ok()) return 2;
      int created = 0;
      for (uint64_t n = 0; !c->stop.load(); ++n) {
        size_t i = n % 4;
        if (!mine[i].acquire().status.ok()) return 3;
        if (c->inside[i].fetch_add(1) != 0) c->overlaps.fetch_add(1);
        c->count[i] = c->count[i] + 1;
        c->inside[i].fetch_sub(1);
        if (!mine[i].release().ok()) return 4;
        c->ops.fetch_add(1);
        if (n % 500 == 0) {  // allocate a name of our own while the table grows
          Lock l;
          if (!tt->lookup("locker-" + std::to_string(p) + "-" + std::to_string(created++), &l).ok()) return 5;
          if (!l.acquire().status.ok() || !l.release().ok()) return 6;
          c->created.fetch_add(1);
        }
      }
      return 0;
    }));
  }

  pid_t grower = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
    for (int batch = 0; batch < 100; ++batch) {
      std::vector<Lock> got;
      Status s = tt->lookup(names("n", batch * 1000, (batch + 1) * 1000), &got);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.to_string().c_str());
        return 2;
      }
      if (!got[7].acquire().status.ok() || !got[7].release().ok()) return 3;
    }
    return 0;
  });
  CHECK(wait_child(grower, 240000) == 0);
  uint64_t ops_at_end = c->ops.load();
  c->stop = true;
  for (pid_t l : lockers) CHECK(wait_child(l) == 0);
  int created_by_lockers = c->created.load();
  CHECK(created_by_lockers > 0);
  CHECK(c->overlaps.load() == 0);
  uint64_t total = 0;
  for (int i = 0; i < 4; ++i) total += c->count[i];
  CHECK(total == c->ops.load());
  CHECK(ops_at_end > 0);  // lockers kept locking during growth

  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.slot_capacity >= 100'000);
  CHECK(st.slots_used == 100'000 + 4 + uint64_t(created_by_lockers));
  expect_unique_slots(*t, 100'000 + 4 + size_t(created_by_lockers));
  // The handles made before the growth still work: slots never moved.
  for (Lock& l : fixed) {
    CHECK(l.acquire().status.ok());
    CHECK(l.release().ok());
  }
}

TEST_CASE("growth: each new extent is a `grown` event") {
  TempDir tmp;
  auto t = open_table(tmp.table(), small());
  std::vector<Lock> ls;
  REQUIRE(t->lookup(names("n", 0, 100), &ls).ok());  // 8 + 16 + 32 + 64
  std::vector<Event> grown;
  HistoryQuery q;
  q.kind = EventKind::grown;
  REQUIRE(t->history(q, &grown).ok());
  REQUIRE(grown.size() == 3);
  CHECK(grown[0].count == 24);
  CHECK(grown[2].count == 120);
}

TEST_CASE("growth: a grower killed at any step leaves a table the next grower completes") {
  const char* point =
      GENERATE("grow:before_allocate", "grow:after_allocate", "grow:after_descriptor", "grow:after_publish",
               "create:before_prepare", "create:before_commit");
  CAPTURE(point);
  TempDir tmp;
  auto t = open_table(tmp.table(), small());
  std::vector<Lock> first;
  REQUIRE(t->lookup(names("a", 0, 8), &first).ok());  // the first extent is full
  pid_t victim = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
    detail::arm_crash_point(point);
    std::vector<Lock> more;
    (void)tt->lookup(names("b", 0, 20), &more);
    return 2;
  });
  int rc = wait_child(victim);
  // create:before_prepare fires only when a slot is prepared: always here.
  CHECK(rc == 128 + SIGKILL);

  std::vector<Lock> more;
  REQUIRE(t->lookup(names("b", 0, 20), &more).ok());
  for (Lock& l : more) {
    CHECK(l.acquire().status.ok());
    CHECK(l.release().ok());
  }
  TableStats st;
  REQUIRE(t->stats(&st).ok());
  CHECK(st.slot_capacity >= 28);
  CHECK(st.extents <= 3);  // 8 + 16 + 32: the dead grower's work was reused, not repeated
  expect_unique_slots(*t, 28);
  // A fresh process agrees.
  pid_t checker = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
    std::vector<std::string> problems;
    return tt->check(&problems).ok() && problems.empty() ? 0 : 2;
  });
  CHECK(wait_child(checker) == 0);
}

TEST_CASE("growth: two growers racing add each extent once") {
  TempDir tmp;
  open_table(tmp.table(), small());
  std::vector<pid_t> growers;
  for (int g = 0; g < 2; ++g) {
    growers.push_back(spawn([&] {
      int dirfd = ::open(tmp.table().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      std::unique_ptr<detail::TableFile> f;
      bool created = false;
      detail::CreateParams p{8, 1u << 20, 1024, format::kHistoryPersisted};
      if (!detail::TableFile::open(dirfd, tmp.table(), false, p, &f, &created).ok()) return 1;
      uint32_t added = 0;
      for (uint64_t want = 9; want <= 6561; want *= 3) {
        if (!f->grow(want, 0, &added).ok()) return 2;
        if (f->slot_capacity() < want) return 3;
        if (f->slot(want - 1) == nullptr) return 4;
      }
      return 0;
    }));
  }
  for (pid_t g : growers) CHECK(wait_child(g) == 0);
  testing::RawTable raw(tmp.table());
  // 8+16+...: the smallest capacity >= 6561 with doubling extents from 8 is 8184 (10 extents).
  CHECK(raw.header()->extent_count == 10);
  CHECK(raw.size() == format::published_end(*raw.header(), 10));
}

TEST_CASE("growth: a process whose mapping is older than the header maps new extents when it needs them") {
  TempDir tmp;
  auto t = open_table(tmp.table(), small());  // this process maps 8 slots
  Pipe holding, go;
  pid_t other = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
    std::vector<Lock> many;
    if (!tt->lookup(names("x", 0, 3000), &many).ok()) return 2;  // grows to several extents
    if (!many[2999].acquire().status.ok()) return 3;
    holding.send();
    if (go.receive() != '.') return 4;
    return many[2999].release().ok() ? 0 : 5;
  });
  REQUIRE(holding.receive() == '.');
  Lock far;
  REQUIRE(t->lookup("x2999", &far, Lookup::existing).ok());
  CHECK(far.slot() >= 2000);
  CHECK(far.try_acquire().status.code() == Code::timed_out);  // we see the other's hold: same memory
  go.send();
  CHECK(far.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10))).status.ok());
  CHECK(far.release().ok());
  CHECK(wait_child(other) == 0);
}

TEST_CASE("growth: every attached process holds the shared attach lock") {
  TempDir tmp;
  open_table(tmp.table(), small());  // created, then closed
  Pipe attached;
  pid_t kid = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), {}, &tt).ok()) return 1;
    attached.send();
    pause();
    return 0;
  });
  REQUIRE(attached.receive() == '.');
  int fd = ::open((tmp.table() + "/table").c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = format::kAttachLockByte;
  fl.l_len = 1;
  CHECK(::fcntl(fd, F_OFD_SETLK, &fl) == -1);  // someone is attached
  ::kill(kid, SIGKILL);
  wait_child(kid);
  fl.l_type = F_WRLCK;
  CHECK(::fcntl(fd, F_OFD_SETLK, &fl) == 0);  // nobody attached: the table to ourselves
  fl.l_type = F_UNLCK;
  REQUIRE(::fcntl(fd, F_OFD_SETLK, &fl) == 0);
  auto t = open_table(tmp.table(), small());  // a Table in this very process attaches too
  fl.l_type = F_WRLCK;
  CHECK(::fcntl(fd, F_OFD_SETLK, &fl) == -1);
  ::close(fd);
}

TEST_CASE("growth: a table at max_slots refuses new names with a clear error") {
  TempDir tmp;
  Options o = small();
  o.max_slots = 16;
  auto t = open_table(tmp.table(), o);
  std::vector<Lock> ls;
  REQUIRE(t->lookup(names("n", 0, 16), &ls).ok());
  Lock one;
  Status s = t->lookup("one-too-many", &one);
  CHECK(s.code() == Code::capacity);
  CHECK(s.message().find(tmp.table()) != std::string::npos);
  REQUIRE(t->remove("n3").ok());
  CHECK(t->lookup("one-too-many", &one).ok());  // a freed slot is reused
  CHECK(one.slot() == ls[3].slot());
}

TEST_CASE("growth: a process whose LMDB map is smaller than the file another process grew keeps working") {
  TempDir tmp;
  Options narrow;
  narrow.lmdb_map_size = size_t{1} << 20;  // the least allowed; the other process maps 64 MiB
  auto t = open_table(tmp.table(), narrow);
  Lock before;
  REQUIRE(t->lookup("before", &before).ok());
  pid_t other = spawn([&] {
    Options wide;
    wide.lmdb_map_size = size_t{64} << 20;
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), wide, &tt).ok()) return 1;
    std::vector<Lock> many;
    return tt->lookup(names("grown-", 0, 20000), &many).ok() ? 0 : 2;  // data.mdb grows past 1 MiB
  });
  REQUIRE(wait_child(other) == 0);
  Lock existing, created;
  Status s = t->lookup("grown-19999", &existing, Lookup::existing);  // a read transaction
  CHECK(s.ok());
  s = t->lookup("after", &created);  // a write transaction
  CHECK(s.ok());
  CHECK(created.acquire().status.ok());
  CHECK(created.release().ok());
  std::vector<Event> events;
  CHECK(t->history(HistoryQuery{}, &events).ok());  // drains into LMDB first
  CHECK(!events.empty());
  std::vector<std::string> problems;
  CHECK(t->check(&problems).ok());
  CHECK(problems.empty());
  // A process that opens the grown file with the small map writes as much.
  pid_t late = spawn([&] {
    std::unique_ptr<Table> tt;
    if (!Table::open(tmp.table(), narrow, &tt).ok()) return 1;
    for (int i = 0; i < 200; ++i) {  // one write transaction each
      Lock l;
      if (!tt->lookup("late-" + std::to_string(i), &l).ok()) return 2;
    }
    return 0;
  });
  CHECK(wait_child(late) == 0);
}
