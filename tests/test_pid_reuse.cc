// Real pid and tid reuse, in a private PID namespace: a holder dies without
// the kernel marking its lock (its robust list was emptied), its pid (or tid)
// is forced onto a new, unrelated, live process (thread) through
// /proc/sys/kernel/ns_last_pid, and the next locker must still see the holder
// as dead (the start time differs) and take the lock over, abandoned.
//
// Needs CAP_SYS_ADMIN (unshare of the PID and mount namespaces); skipped with
// a message otherwise.
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <thread>

#include "helpers.h"

using namespace locktable;
using testing::Pipe;
using testing::TempDir;

namespace {

constexpr int kSkipped = 77;

// Makes the calling thread's death invisible to lock waiters: its robust
// list (which holds the slots of its locks) is swapped for an empty one.
void hide_death_from_kernel() {
  static thread_local robust_list_head empty;
  empty.list.next = &empty.list;
  empty.futex_offset = 0;
  empty.list_op_pending = nullptr;
  ::syscall(SYS_set_robust_list, &empty, sizeof empty);
}

// The next pid (or tid) the namespace hands out will be `want`.
bool set_next_pid(pid_t want) {
  FILE* f = std::fopen("/proc/sys/kernel/ns_last_pid", "w");
  if (f == nullptr) return false;
  bool ok = std::fprintf(f, "%d", want - 1) > 0;
  return std::fclose(f) == 0 && ok;
}

void tick() { ::usleep(30000); }  // start times count clock ticks (10 ms): make them differ

// Runs as pid 1 of the new namespace. Returns 0 or the number of the failed step.
int scenario(const std::string& dir) {
  if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 2;
  if (::mount("proc", "/proc", "proc", 0, nullptr) != 0) return 3;

  Options options;
  std::unique_ptr<Table> table;
  if (!Table::open(dir, options, &table).ok()) return 4;
  Lock by_pid, by_tid;
  if (!table->lookup("pid-reuse", &by_pid).ok() || !table->lookup("tid-reuse", &by_tid).ok()) return 5;

  // --- pid reuse: holder H dies unnoticed, R gets H's pid ---
  Pipe held;
  pid_t h = ::fork();
  if (h == 0) {
    if (!by_pid.acquire().status.ok()) ::_exit(1);
    hide_death_from_kernel();
    held.send();
    ::_exit(0);  // dies holding it
  }
  if (held.receive() != '.') return 6;
  int status = 0;
  ::waitpid(h, &status, 0);
  tick();
  if (!set_next_pid(h)) return 7;
  Pipe started;
  pid_t r = ::fork();
  if (r == 0) {
    started.send();
    ::pause();  // an unrelated live process with the dead holder's pid
    ::_exit(0);
  }
  if (started.receive() != '.') return 8;
  if (r != h) return 9;  // the namespace did not hand the pid out again
  AcquireResult got = by_pid.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
  if (!got.abandoned()) return 10;
  if (got.dead_owner.pid != uint32_t(h)) return 11;
  if (::kill(r, 0) != 0) return 12;  // the pid really is in use by a live process
  (void)by_pid.mark_consistent();
  if (!by_pid.release().ok()) return 13;
  ::kill(r, SIGKILL);
  ::waitpid(r, &status, 0);

  // --- tid reuse: thread T1 exits holding a lock unnoticed, T2 gets its tid ---
  pid_t t1 = 0;
  std::thread first([&] {
    t1 = pid_t(::gettid());
    if (by_tid.acquire().status.ok()) hide_death_from_kernel();
  });
  first.join();
  if (t1 == 0) return 14;
  tick();
  if (!set_next_pid(t1)) return 15;
  std::atomic<pid_t> t2{0};
  std::atomic<bool> stop{false};
  std::thread second([&] {
    t2 = pid_t(::gettid());
    while (!stop) ::usleep(1000);
  });
  while (t2 == 0) std::this_thread::yield();
  int rc = 0;
  if (t2 != t1) rc = 16;
  if (rc == 0) {
    AcquireResult g2 = by_tid.acquire(Mode::exclusive, Deadline::after(std::chrono::seconds(10)));
    if (!g2.abandoned()) rc = 17;
    else if (g2.dead_owner.tid != uint32_t(t1)) rc = 18;
    else if (!by_tid.release().ok()) rc = 19;
  }
  stop = true;
  second.join();
  return rc;
}

}  // namespace

TEST_CASE("real pid and tid reuse in a PID namespace: the dead holder is still found dead") {
  TempDir tmp;
  const std::string dir = tmp.table();
  pid_t outer = ::fork();
  REQUIRE(outer >= 0);
  if (outer == 0) {
    if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) ::_exit(kSkipped);
    pid_t init = ::fork();  // pid 1 of the new namespace
    if (init == 0) ::_exit(scenario(dir));
    int status = 0;
    ::waitpid(init, &status, 0);
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  int rc = testing::wait_child(outer, 60000);
  if (rc == kSkipped) {
    WARN("skipped: unshare(CLONE_NEWPID | CLONE_NEWNS) not permitted here (needs CAP_SYS_ADMIN)");
    return;
  }
  INFO("failed step (see scenario() in " << __FILE__ << "): " << rc);
  CHECK(rc == 0);
}
