// Test helpers: temporary table folders and real child processes.
//
// Children are real fork()ed processes. A child never uses Catch2 (its
// assertions would be reported from the wrong process): it reports through
// its exit status and through pipes.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "locktable/locktable.h"

namespace testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string table() const { return path_ + "/t"; }  // a table folder inside it

 private:
  std::string path_;
};

// Opens (creating) a table; REQUIREs success.
std::unique_ptr<locktable::Table> open_table(const std::string& dir, locktable::Options options = {});

// Opens the table and looks up `name` in a child; aborts the child on failure.
locktable::Lock child_lock(const std::string& dir, const std::string& name,
                           std::unique_ptr<locktable::Table>* keep);

// Runs fn in a forked child, which exits with fn's result.
pid_t spawn(const std::function<int()>& fn);

// A child that opens the table, acquires `name` in `mode` and holds it until
// killed; returns once it holds it (REQUIREs that it got there).
pid_t spawn_holder(const std::string& dir, const std::string& name,
                   locktable::Mode mode = locktable::Mode::exclusive);

class Pipe;

// A holder that, once it holds, waits for a byte on `release` and then
// releases: it exits 0 when the release succeeded (and not abandoned), else
// nonzero. Returns once it holds the lock (REQUIREs that it got there).
pid_t spawn_releasing_holder(const std::string& dir, const std::string& name, locktable::Mode mode,
                             const Pipe& release);

// The same as spawn_holder, but once it holds the lock the child execs
// /bin/sleep 30: the process lives on (same pid and start time) as another program.
pid_t spawn_exec_holder(const std::string& dir, const std::string& name, locktable::Mode mode);

// Waits for a child: its exit status, or 128 + signal. Kills it and returns
// -1 after timeout_ms.
int wait_child(pid_t pid, int timeout_ms = 60000);

// A one-way pipe for "I got here" signals between processes.
class Pipe {
 public:
  Pipe();
  ~Pipe();
  void send(char c = '.') const;
  // The next byte, or 0 on timeout / closed.
  char receive(int timeout_ms = 30000) const;
  void close_read();
  void close_write();

 private:
  int fds_[2];
};

// Milliseconds since an arbitrary start (monotonic).
double now_ms();

// True once `pid` is gone or a zombie (an orphan's reaper may be slow, or
// none), within `ms`. For a child of the caller not yet waited for, true
// means a zombie.
bool ends_within(pid_t pid, int ms);

// Acquires `lock` exclusively, waiting at most 10 s, and CHECKs that it was
// taken over from a holder of process `dead` within 1 s, told abandoned.
// Returns the dead owner it was told.
locktable::Owner expect_takeover(locktable::Lock& lock, pid_t dead);

// CHECKs the promise of Table::list with a prefix on an empty table `t`
// (either backend): exactly the names that begin with it, in both scopes,
// among neighbours that sort just before and after them.
void check_prefix_listing(locktable::Table& t);

// A WaitInterrupt that says stop once another thread sets `stop`; counts the asks.
struct FlagInterrupt final : locktable::WaitInterrupt {
  std::atomic<bool> stop{false};
  std::atomic<int> asks{0};
  bool requested() override {
    asks.fetch_add(1);
    return stop.load();
  }
};

// A T in memory shared with the children forked after this call (never freed).
template <class T>
T* shared_memory() {
  void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("shared_memory: mmap failed");
  return new (p) T();
}

}  // namespace testing

#include "table_format.h"

namespace testing {

// The table file mapped directly, independent of the engine: for forging
// records and corrupting headers the way a crash or a bug elsewhere would.
class RawTable {
 public:
  explicit RawTable(const std::string& table_dir);
  ~RawTable();
  locktable::format::Header* header() const { return reinterpret_cast<locktable::format::Header*>(base_); }
  locktable::format::Slot* slot(uint32_t index) const;
  locktable::format::ReaderRecord* reader(uint32_t index) const;
  locktable::format::SegmentHeader* segment(uint32_t k) const {
    const uint32_t units = locktable::format::segment_units(header()->ring_entries);
    return reinterpret_cast<locktable::format::SegmentHeader*>(base_ + locktable::format::kHeaderSize +
                                                              uint64_t{k} * units * locktable::format::kRingEntrySize);
  }
  size_t size() const { return size_; }

 private:
  char* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace testing
