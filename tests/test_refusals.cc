// Bad input: a missing, foreign, corrupt, truncated or newer table, another PID
// namespace, permissions, symlinks, a full file system, and the reset after a
// reboot. Every case is a clear error naming the file, never a crash.
#include <fcntl.h>
#include <lmdb.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "header_check.h"
#include "helpers.h"
#include "proc_thread.h"
#include "system_info.h"

using namespace locktable;
using testing::open_table;
using testing::spawn;
using testing::TempDir;
using testing::wait_child;

namespace {

Status try_open(const std::string& dir, bool create = false) {
  std::unique_ptr<Table> t;
  Options o;
  o.create_if_missing = create;
  return Table::open(dir, o, &t);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST_CASE("a missing folder or table is not_found, naming it") {
  TempDir tmp;
  Status s = try_open(tmp.path() + "/nope");
  CHECK(s.code() == Code::not_found);
  CHECK(contains(s.message(), tmp.path() + "/nope"));
  s = try_open(tmp.path());  // a folder without a table
  CHECK(s.code() == Code::not_found);
  CHECK(contains(s.message(), tmp.path() + "/table"));
  write_file(tmp.path() + "/plain", "x");
  s = try_open(tmp.path() + "/plain", true);
  CHECK_FALSE(s.ok());
  CHECK(contains(s.message(), tmp.path() + "/plain"));
}

TEST_CASE("a file that is not a table, or is truncated, is corrupt") {
  TempDir tmp;
  open_table(tmp.table());
  std::string table = tmp.table() + "/table";
  uintmax_t full = std::filesystem::file_size(table);

  SECTION("not a locktable file") {
    write_file(table, std::string(8192, 'z'));
    Status s = try_open(tmp.table());
    CHECK(s.code() == Code::corrupt);
    CHECK(s.message() == table + ": not a locktable file (bad magic)");
  }
  for (uintmax_t size : {uintmax_t{0}, uintmax_t{7}, uintmax_t{100}, uintmax_t{4095}, uintmax_t{4096}, full - 1}) {
    DYNAMIC_SECTION("truncated to " << size) {
      std::filesystem::resize_file(table, size);
      Status s = try_open(tmp.table());
      CHECK(s.code() == Code::corrupt);
      CHECK(contains(s.message(), table));
      CHECK(contains(s.message(), "truncated"));
    }
  }
}

TEST_CASE("a table of a newer format, or with corrupt header fields, is refused") {
  TempDir tmp;
  open_table(tmp.table());
  testing::RawTable raw(tmp.table());
  format::Header* h = raw.header();
  SECTION("newer version") {
    h->magic[7] = char('0' + format::kVersion + 1);
    h->format = (uint64_t{format::kVersion + 1} << 32) | (format::kFormat & 0xffffffffu);
    Status s = try_open(tmp.table());
    CHECK(s.code() == Code::version_mismatch);
    CHECK(contains(s.message(), fmt::format("version {}, this build reads version {}", format::kVersion + 1,
                                             format::kVersion)));
  }
  SECTION("older version (a table made by an earlier build)") {
    h->magic[7] = '1';
    h->format = (uint64_t{1} << 32) | (format::kFormat & 0xffffffffu);
    Status s = try_open(tmp.table());
    CHECK(s.code() == Code::version_mismatch);
    CHECK(contains(s.message(), tmp.table() + "/table: table format version 1, this build reads version " + std::to_string(format::kVersion)));
  }
  SECTION("immutable field") {
    h->ring_entries = 12345;  // caught by the checksum before the ring check
    Status s = try_open(tmp.table());
    CHECK(s.code() == Code::corrupt);
    CHECK(contains(s.message(), "checksum"));
  }
  SECTION("extent count") {
    h->extent_count = 0;
    CHECK(try_open(tmp.table()).code() == Code::corrupt);
    h->extent_count = 20;
    CHECK(try_open(tmp.table()).code() == Code::corrupt);
  }
  SECTION("history level") {
    h->history_level = 9;
    CHECK(try_open(tmp.table()).code() == Code::corrupt);
  }
}

TEST_CASE("a table created in another PID namespace is refused") {
  TempDir tmp;
  open_table(tmp.table());
  testing::RawTable raw(tmp.table());
  raw.header()->pid_namespace += 1;
  raw.header()->header_crc = format::header_crc(*raw.header());
  Status s = try_open(tmp.table());
  CHECK(s.code() == Code::unsupported);
  CHECK(contains(s.message(), "PID namespace"));
}

TEST_CASE("network file systems are recognised") {
  CHECK(std::string(detail::network_filesystem_name(0x6969)) == "NFS");
  CHECK(std::string(detail::network_filesystem_name(0xFF534D42)) == "CIFS");
  CHECK(std::string(detail::network_filesystem_name(0x65735546)) == "FUSE");
  CHECK(detail::network_filesystem_name(0xEF53) == nullptr);  // ext4
  CHECK(detail::network_filesystem_name(0x01021994) == nullptr);  // tmpfs
  TempDir tmp;
  CHECK(detail::check_local_filesystem(tmp.path(), false).ok());
}

TEST_CASE("a symbolic link in place of the table file is refused") {
  TempDir tmp;
  open_table(tmp.table());
  std::string table = tmp.table() + "/table";
  std::filesystem::rename(table, tmp.path() + "/elsewhere");
  std::filesystem::create_symlink(tmp.path() + "/elsewhere", table);
  Status s = try_open(tmp.table());
  CHECK(s.code() == Code::permission_denied);
  CHECK(contains(s.message(), "symbolic link"));
}

TEST_CASE("files are created 0660 under the umask, never world-writable") {
  TempDir tmp;
  mode_t old = ::umask(0002);
  open_table(tmp.table());
  ::umask(0027);
  open_table(tmp.path() + "/u");
  ::umask(old);
  auto mode = [](const std::string& p) {
    struct stat st;
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 0777;
  };
  CHECK(mode(tmp.table() + "/table") == 0660);
  CHECK(mode(tmp.table() + "/data.mdb") == 0660);
  CHECK(mode(tmp.path() + "/u/table") == 0640);
  CHECK(mode(tmp.path() + "/u/data.mdb") == 0640);
  CHECK((mode(tmp.path() + "/u") & 0002) == 0);
}

TEST_CASE("more address space than the process may map is a capacity error naming the file; the table opens later") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  WARN("skipped: a sanitizer's shadow memory and RLIMIT_AS do not go together");
  return;
#endif
  TempDir big, small;
  pid_t kid = spawn([&] {
    // Room for this process as it is and 256 MiB more: not for the 1 GiB of
    // a table's growth to 2^24 slots, nor for a 1 GiB LMDB map.
    long pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    const rlim_t limit = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + (rlim_t{256} << 20);
    rlimit r{limit, limit};
    if (::setrlimit(RLIMIT_AS, &r) != 0) return 10;
    auto refused = [](const std::string& dir, const Options& o, const std::string& file, const char* option) {
      std::unique_ptr<Table> t;
      Status s = Table::open(dir, o, &t);
      if (s.code() != Code::capacity) return false;
      return s.message().find(dir + "/" + file) != std::string::npos && s.message().find(option) != std::string::npos;
    };
    Options o;
    o.max_slots = uint64_t{1} << 24;
    if (!refused(big.table(), o, "table", "max_slots")) return 1;
    o.max_slots = 1024;
    o.lmdb_map_size = size_t{1} << 30;
    if (!refused(small.table(), o, "data.mdb", "lmdb_map_size")) return 2;
    return 0;
  });
  CHECK(wait_child(kid) == 0);
  for (const TempDir* d : {&big, &small}) {
    auto t = open_table(d->table());  // what the refused open made is a table all the same
    Lock l;
    REQUIRE(t->lookup("after", &l).ok());
    CHECK(l.try_acquire().held());
    CHECK(l.release().ok());
  }
}

TEST_CASE("with every LMDB reader slot taken by live processes a lookup is a capacity error; a dead one's come back") {
  TempDir tmp;
  open_table(tmp.table());
  testing::Pipe full, report, killed;
  // Takes every reader slot with raw LMDB read transactions, and keeps them.
  pid_t filler = spawn([&] {
    MDB_env* env = nullptr;
    if (mdb_env_create(&env) != 0) return 1;
    mdb_env_set_maxdbs(env, 8);
    if (mdb_env_open(env, tmp.table().c_str(), MDB_NOTLS | MDB_RDONLY, 0660) != 0) return 2;
    MDB_txn* txn = nullptr;
    int taken = 0;
    while (mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0) ++taken;
    full.send();
    ::pause();
    return taken > 0 ? 0 : 3;
  });
  REQUIRE(full.receive() != 0);
  pid_t reader = spawn([&] {
    std::unique_ptr<Table> t;
    if (!Table::open(tmp.table(), {}, &t).ok()) return 1;
    Lock l;
    Status s = t->lookup("x", &l);  // a read transaction: no slot left
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    const bool clear = s.code() == Code::capacity && s.message().find(tmp.table() + "/data.mdb") != std::string::npos &&
                       s.message().find("reader slots") != std::string::npos;
    report.send();
    if (!clear) return 2;
    killed.receive();
    return t->lookup("x", &l).ok() ? 0 : 3;  // the dead filler's slots are found and freed
  });
  REQUIRE(report.receive() != 0);
  ::kill(filler, SIGKILL);
  CHECK(wait_child(filler) == 128 + SIGKILL);
  killed.send();
  CHECK(wait_child(reader) == 0);
}

TEST_CASE("a table the user may not write is refused with permission_denied") {
  TempDir tmp;
  open_table(tmp.table());
  ::chmod(tmp.path().c_str(), 0755);
  ::chmod(tmp.table().c_str(), 0755);
  pid_t kid = spawn([&] {
    if (::getuid() == 0) {
      // Root reads everything: become nobody, as another user would be.
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    } else {
      ::chmod((tmp.table() + "/table").c_str(), 0400);
    }
    std::unique_ptr<Table> t;
    Status s = Table::open(tmp.table(), {}, &t);
    if (s.code() != Code::permission_denied) {
      std::fprintf(stderr, "got %s\n", s.to_string().c_str());
      return 1;
    }
    return s.message().find(tmp.table() + "/table") != std::string::npos ? 0 : 2;
  });
  CHECK(wait_child(kid) == 0);
}

TEST_CASE("a corrupt LMDB record is an error naming it, in lookup, list and check") {
  TempDir tmp;
  {
    auto t = open_table(tmp.table());
    Lock l;
    REQUIRE(t->lookup("good", &l).ok());
  }
  {
    MDB_env* env;
    REQUIRE(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 8);
    REQUIRE(mdb_env_open(env, tmp.table().c_str(), 0, 0660) == 0);
    MDB_txn* txn;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi names;
    REQUIRE(mdb_dbi_open(txn, "names", 0, &names) == 0);
    MDB_val k{3, const_cast<char*>("bad")}, v{4, const_cast<char*>("junk")};
    REQUIRE(mdb_put(txn, names, &k, &v, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
  }
  auto t = open_table(tmp.table());
  Lock l;
  Status s = t->lookup("bad", &l);
  CHECK(s.code() == Code::corrupt);
  CHECK(contains(s.message(), "'bad'"));
  CHECK(contains(s.message(), "data.mdb"));
  std::vector<LockInfo> ls;
  CHECK(t->list(&ls).code() == Code::corrupt);
  std::vector<std::string> problems;
  REQUIRE(t->check(&problems).ok());
  REQUIRE_FALSE(problems.empty());
  CHECK(contains(problems[0], "'bad'"));
  CHECK(t->lookup("good", &l).ok());  // the rest of the table still works
}

TEST_CASE("after a reboot every lock is freed, abandoned, and the reset is in history") {
  TempDir tmp;
  auto t = open_table(tmp.table());
  pid_t kid = spawn([&] {
    std::unique_ptr<Table> tt;
    Lock l = testing::child_lock(tmp.table(), "held-at-crash", &tt);
    return l.acquire().status.ok() ? 0 : 1;  // exits holding it (the kernel marks it)
  });
  REQUIRE(wait_child(kid) == 0);
  Lock free_one;
  REQUIRE(t->lookup("free-at-crash", &free_one).ok());
  // Forge a table from an earlier boot: unmark the kernel's OWNER_DIED by
  // writing a plausible live-looking owner, and change the boot id.
  testing::RawTable raw(tmp.table());
  raw.slot(0)->owner.tid_word = uint32_t(kid);
  // A history segment claimed in the earlier boot by a pid, tid and start time
  // that are alive in this one (this very thread): still dead.
  uint64_t start = 0;
  char state = 0;
  REQUIRE(detail::read_thread_stat(uint32_t(::getpid()), uint32_t(::gettid()), &start, &state));
  const uint32_t last = format::ring_segments(raw.header()->ring_entries) - 1;
  raw.segment(last)->ident = format::OwnerRecord{uint32_t(::gettid()), uint32_t(::getpid()), uint32_t(start), 1};
  raw.header()->boot_id[0] ^= 0xff;
  t.reset();

  auto again = open_table(tmp.table());
  detail::BootId now;
  REQUIRE(detail::read_boot_id(&now).ok());
  CHECK(std::memcmp(raw.header()->boot_id, now.data(), 16) == 0);
  CHECK(raw.header()->reset_count == 1);
  Lock held;
  REQUIRE(again->lookup("held-at-crash", &held).ok());
  AcquireResult r = held.try_acquire();
  CHECK(r.abandoned());
  CHECK(r.dead_owner.pid == uint32_t(kid));
  CHECK(held.release().ok());
  REQUIRE(again->lookup("free-at-crash", &free_one).ok());
  CHECK(free_one.try_acquire().status.ok());
  CHECK(free_one.release().ok());
  std::vector<Event> ev;
  HistoryQuery q;
  q.kind = EventKind::reset;
  REQUIRE(again->history(q, &ev).ok());
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].count == 1);
  // The reset marked the old boot's segment dead; the drain freed it.
  CHECK(raw.segment(last)->ident.tid_word == 0);
  CHECK(raw.segment(last)->ident.pid_word == 0);
}

TEST_CASE("every header byte corrupted in turn: a clear refusal or a working table, never a crash") {
  TempDir tmp;
  {
    Options o;
    o.initial_slots = 8;
    auto t = open_table(tmp.table(), o);
    for (int i = 0; i < 12; ++i) {  // past the first extent: two extent descriptors in use
      Lock l;
      REQUIRE(t->lookup("n" + std::to_string(i), &l).ok());
    }
  }
  const std::string table = tmp.table() + "/table";
  int fd = ::open(table.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  std::string original(format::kHeaderSize, '\0');
  REQUIRE(::pread(fd, original.data(), original.size(), 0) == ssize_t(original.size()));
  const uintmax_t size_before = std::filesystem::file_size(table);

  struct Range {
    size_t begin, end;
    bool immutable;
  };
  const Range ranges[] = {
      {0, format::kHeaderCrcBytes + 4, true},                                        // magic .. header_crc
      {offsetof(format::Header, extent_count), offsetof(format::Header, reset_count) + 4, false},
      {offsetof(format::Header, extents), offsetof(format::Header, extents) + 2 * sizeof(format::ExtentDescriptor), false},
      {offsetof(format::Header, unsegmented_lost), offsetof(format::Header, unsegmented_lost) + 8, false},
  };
  // Child exit codes: 0 opened and worked, 1 refused naming the file, 2 refused
  // without naming it, 3 opened but an operation failed without naming anything.
  for (const Range& range : ranges) {
    for (size_t off = range.begin; off < range.end; ++off) {
      std::string bad = original;
      bad[off] = char(bad[off] ^ 0xff);
      REQUIRE(::pwrite(fd, bad.data(), bad.size(), 0) == ssize_t(bad.size()));
      pid_t kid = spawn([&] {
        std::unique_ptr<Table> t;
        Options o;
        o.create_if_missing = false;
        Status s = Table::open(tmp.table(), o, &t);
        if (!s.ok()) return s.message().find(table) != std::string::npos ? 1 : 2;
        Lock l;
        if (Status ls = t->lookup("n3", &l); !ls.ok()) return ls.message().empty() ? 3 : 0;
        AcquireResult r = l.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(2)));
        if (r.held()) (void)l.release();
        std::vector<LockInfo> locks;
        (void)t->list(&locks);
        std::vector<std::string> problems;
        (void)t->check(&problems);
        return 0;
      });
      int rc = wait_child(kid, 20000);
      INFO("header byte " << off << " flipped: child " << rc);
      CHECK((rc == 0 || rc == 1));  // never a crash (128+signal), a hang (-1) or a nameless error
      if (range.immutable) CHECK(rc == 1);
      REQUIRE(::pwrite(fd, original.data(), original.size(), 0) == ssize_t(original.size()));
    }
  }
  ::close(fd);
  // No corrupt descriptor made anyone stretch the file.
  CHECK(std::filesystem::file_size(table) == size_before);
}

TEST_CASE("a full file system is capacity, naming the file, and the table stays consistent") {
  TempDir tmp;
  const std::string fs = tmp.path() + "/tiny";
  REQUIRE(::mkdir(fs.c_str(), 0700) == 0);
  pid_t kid = spawn([&] {
    // A file system of its own, 8 MiB, in a mount namespace of its own.
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", fs.c_str(), "tmpfs", 0, "size=8m") != 0) {
      return 77;
    }
    Options o;
    o.initial_slots = 16384;  // no growth of the table file: LMDB is the one to find the disk full
    o.ring_entries = 1024;
    const std::string dir = fs + "/t";
    std::unique_ptr<Table> t;
    if (!Table::open(dir, o, &t).ok()) return 1;
    Lock first;
    if (!t->lookup("first", &first).ok()) return 2;
    // Fill the file system but for 3 pages: LMDB's next commit of many pages
    // writes part of them (a short write, which LMDB reports as EIO).
    {
      const int fd = ::open((fs + "/filler").c_str(), O_WRONLY | O_CREAT, 0600);
      char page[4096] = {};
      off_t size = 0;
      while (::write(fd, page, sizeof page) == ssize_t(sizeof page)) size += sizeof page;
      if (::ftruncate(fd, size - 3 * 4096) != 0) return 3;
      ::close(fd);
    }
    Status s;
    for (int batch = 0; batch < 100 && s.ok(); ++batch) {
      std::vector<std::string> names;
      for (int i = 0; i < 500; ++i) names.push_back(fmt::format("n{}-{}", batch, i));
      std::vector<Lock> locks;
      s = t->lookup(names, &locks);
    }
    if (s.code() != Code::capacity) {
      std::fprintf(stderr, "got %s\n", s.to_string().c_str());
      return 4;
    }
    if (!contains(s.message(), dir + "/data.mdb") || !contains(s.message(), "no space left")) {
      std::fprintf(stderr, "message: %s\n", s.message().c_str());
      return 5;
    }
    // The locks go on, and nothing is half-written.
    if (!first.acquire().status.ok() || !first.release().ok()) return 6;
    std::vector<std::string> problems;
    if (!t->check(&problems).ok() || !problems.empty()) return 7;
    return 0;
  });
  const int rc = wait_child(kid);
  if (rc == 77) {
    WARN("not run: this process may not mount a tmpfs in a mount namespace of its own");
    return;
  }
  CHECK(rc == 0);
}
