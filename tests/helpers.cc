#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/locktable-test-XXXXXX";
  char* p = ::mkdtemp(tmpl);
  REQUIRE(p != nullptr);
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::unique_ptr<locktable::Table> open_table(const std::string& dir, locktable::Options options) {
  std::unique_ptr<locktable::Table> t;
  locktable::Status s = locktable::Table::open(dir, options, &t);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return t;
}

locktable::Lock child_lock(const std::string& dir, const std::string& name, std::unique_ptr<locktable::Table>* keep) {
  locktable::Status s = locktable::Table::open(dir, {}, keep);
  if (!s.ok()) {
    std::fprintf(stderr, "child: %s\n", s.to_string().c_str());
    std::_Exit(90);
  }
  locktable::Lock lock;
  s = (*keep)->lookup(name, &lock);
  if (!s.ok()) {
    std::fprintf(stderr, "child: %s\n", s.to_string().c_str());
    std::_Exit(91);
  }
  return lock;
}

namespace {

// What a holder does once it holds: stay (pause), exec sleep, or release on a byte.
enum class Then { pause, exec_sleep, release_on_byte };

pid_t spawn_holder_then(const std::string& dir, const std::string& name, locktable::Mode mode, Then then,
                        const Pipe* release = nullptr) {
  Pipe holding;
  pid_t pid = spawn([&] {
    std::unique_ptr<locktable::Table> keep;
    locktable::Lock lock = child_lock(dir, name, &keep);
    if (!lock.acquire(mode).status.ok()) return 1;
    holding.send();
    if (then == Then::exec_sleep) ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    if (then == Then::release_on_byte) {
      if (release->receive() != '.') return 2;
      return lock.release(mode).ok() ? 0 : 3;
    }
    ::pause();
    return 0;
  });
  REQUIRE(holding.receive() == '.');
  return pid;
}

}  // namespace

pid_t spawn_holder(const std::string& dir, const std::string& name, locktable::Mode mode) {
  return spawn_holder_then(dir, name, mode, Then::pause);
}

pid_t spawn_releasing_holder(const std::string& dir, const std::string& name, locktable::Mode mode,
                             const Pipe& release) {
  return spawn_holder_then(dir, name, mode, Then::release_on_byte, &release);
}

pid_t spawn_exec_holder(const std::string& dir, const std::string& name, locktable::Mode mode) {
  return spawn_holder_then(dir, name, mode, Then::exec_sleep);
}

pid_t spawn(const std::function<int()>& fn) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int rc = 99;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child exception: %s\n", e.what());
      rc = 98;
    }
    std::fflush(nullptr);
    std::_Exit(rc);
  }
  return pid;
}

int wait_child(pid_t pid, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -2;
    }
    if (r < 0) return -3;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Pipe::Pipe() { REQUIRE(::pipe2(fds_, O_CLOEXEC) == 0); }

Pipe::~Pipe() {
  close_read();
  close_write();
}

void Pipe::send(char c) const {
  if (fds_[1] >= 0) (void)!::write(fds_[1], &c, 1);
}

char Pipe::receive(int timeout_ms) const {
  pollfd p{fds_[0], POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return 0;
  char c = 0;
  return ::read(fds_[0], &c, 1) == 1 ? c : 0;
}

void Pipe::close_read() {
  if (fds_[0] >= 0) ::close(fds_[0]);
  fds_[0] = -1;
}

void Pipe::close_write() {
  if (fds_[1] >= 0) ::close(fds_[1]);
  fds_[1] = -1;
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

bool ends_within(pid_t pid, int ms) {
  for (int waited = 0; waited <= ms; waited += 10) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const size_t paren = line.rfind(')');
    if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void check_prefix_listing(locktable::Table& t) {
  using locktable::ListScope;
  // "jobs0" and "jobt" sort after every "jobs/..." ('0' and 't' follow '/'),
  // "job" and "jobs" before; "jobs/\xff" is the last name with the prefix
  // bytewise; ".h" starts with the byte etcd's encoding escapes at the front.
  const std::vector<std::string> names = {"job",     "jobs",   "jobs/1", "jobs/2", "jobs/\xff",
                                          "jobs0",   "jobt",   ".hidden", ".h",    "orders"};
  std::vector<locktable::Lock> locks;
  REQUIRE(t.lookup(names, &locks).ok());
  REQUIRE(locks[3].acquire().held());                          // jobs/2
  REQUIRE(locks[9].acquire(locktable::Mode::shared).held());  // orders
  auto listed = [&](ListScope scope, std::string_view prefix) {
    std::vector<locktable::LockInfo> ls;
    REQUIRE(t.list(&ls, scope, prefix).ok());
    std::set<std::string> out;
    for (const locktable::LockInfo& l : ls) out.insert(l.name);
    CHECK(out.size() == ls.size());
    return out;
  };
  using Set = std::set<std::string>;
  CHECK(listed(ListScope::all, "jobs/") == Set{"jobs/1", "jobs/2", "jobs/\xff"});
  CHECK(listed(ListScope::all, "jobs") == Set{"jobs", "jobs/1", "jobs/2", "jobs/\xff", "jobs0"});
  CHECK(listed(ListScope::all, "jobs/2") == Set{"jobs/2"});
  CHECK(listed(ListScope::all, ".h") == Set{".h", ".hidden"});
  CHECK(listed(ListScope::all, "jobs/3").empty());
  CHECK(listed(ListScope::all, "zzz").empty());
  CHECK(listed(ListScope::all, "").size() == names.size());
  CHECK(listed(ListScope::busy, "jobs/") == Set{"jobs/2"});
  CHECK(listed(ListScope::busy, "or") == Set{"orders"});
  CHECK(listed(ListScope::busy, "job") == Set{"jobs/2"});
  CHECK(listed(ListScope::busy, "jobs/1").empty());
  CHECK(listed(ListScope::busy, "") == Set{"jobs/2", "orders"});
  CHECK(locks[3].release().ok());
  CHECK(locks[9].release(locktable::Mode::shared).ok());
}

locktable::Owner expect_takeover(locktable::Lock& lock, pid_t dead) {
  const double start = now_ms();
  locktable::AcquireResult r =
      lock.acquire(locktable::Mode::exclusive, locktable::Deadline::after(std::chrono::seconds(10)));
  CHECK(r.abandoned());
  CHECK(r.dead_owner.pid == uint32_t(dead));
  CHECK(now_ms() - start < 1000);
  return r.dead_owner;
}

}  // namespace testing

#include <sys/mman.h>
#include <sys/stat.h>

namespace testing {

RawTable::RawTable(const std::string& table_dir) {
  int fd = ::open((table_dir + "/table").c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  struct stat st;
  REQUIRE(::fstat(fd, &st) == 0);
  size_ = size_t(st.st_size);
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  REQUIRE(p != MAP_FAILED);
  base_ = static_cast<char*>(p);
}

RawTable::~RawTable() { ::munmap(base_, size_); }

locktable::format::Slot* RawTable::slot(uint32_t index) const {
  using namespace locktable::format;
  const Header* h = header();
  for (uint32_t k = 0; k < kMaxExtents; ++k) {
    ExtentGeometry g = extent_geometry(h->ring_entries, h->initial_slots, k);
    if (index < g.first_slot + g.slot_count) {
      REQUIRE(g.offset + g.bytes <= size_);
      return reinterpret_cast<Slot*>(base_ + g.offset) + (index - g.first_slot);
    }
  }
  return nullptr;
}

locktable::format::ReaderRecord* RawTable::reader(uint32_t index) const {
  using namespace locktable::format;
  const Header* h = header();
  for (uint32_t k = 0; k < kMaxExtents; ++k) {
    ExtentGeometry g = extent_geometry(h->ring_entries, h->initial_slots, k);
    if (index < g.first_reader + g.reader_count) {
      return reinterpret_cast<ReaderRecord*>(base_ + g.offset + g.slot_count * kSlotSize) + (index - g.first_reader);
    }
  }
  return nullptr;
}

}  // namespace testing
