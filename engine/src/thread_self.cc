#include "thread_self.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace locktable::detail {

constinit thread_local ThreadSelf tls_self __attribute__((tls_model("initial-exec"))) = {};

namespace {

// Used only when the thread has no robust list registered (not glibc's nptl).
thread_local RobustHead tls_own_head = {};

void reset_after_fork() { tls_self.ready = 0; }

RobustHead* find_robust_head() {
  RobustHead* head = nullptr;
  size_t len = 0;
  if (syscall(SYS_get_robust_list, 0, &head, &len) != 0) return nullptr;
  if (head == nullptr) {
    tls_own_head.list = &tls_own_head;
    tls_own_head.futex_offset = kRobustFutexOffset;
    tls_own_head.list_op_pending = nullptr;
    if (syscall(SYS_set_robust_list, &tls_own_head, sizeof(RobustHead)) != 0) return nullptr;
    return &tls_own_head;
  }
  if (len != sizeof(RobustHead) || head->futex_offset != kRobustFutexOffset) return nullptr;
  return head;
}

}  // namespace

bool read_thread_stat(uint32_t pid, uint32_t tid, uint64_t* start_time, char* state) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/task/%u/stat", pid, tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // "pid (comm) state ppid ... starttime ...": comm may hold spaces and ')'.
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;
  *state = *p;
  // Fields after the comm: state is field 3, starttime is field 22.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  char* end = nullptr;
  unsigned long long v = std::strtoull(p, &end, 10);
  if (end == p) return false;
  *start_time = v;
  return true;
}

bool read_thread_comm(uint32_t pid, uint32_t tid, char comm[16]) {
  std::memset(comm, 0, 16);
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%u/task/%u/comm", pid, tid);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = ::read(fd, comm, 15);
  ::close(fd);
  if (n <= 0) return false;
  if (comm[n - 1] == '\n') comm[n - 1] = '\0';
  return true;
}

ThreadSelf& thread_self_slow() {
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, reset_after_fork); });

  ThreadSelf& s = tls_self;
  s.pid = uint32_t(::getpid());
  s.tid = uint32_t(::gettid());
  uint64_t start = 0;
  char state = 0;
  if (!read_thread_stat(s.pid, s.tid, &start, &state)) start = 0;
  s.start = uint32_t(start);
  s.robust = find_robust_head();
  std::memset(s.comm, 0, sizeof s.comm);
  prctl(PR_GET_NAME, s.comm, 0, 0, 0);
  s.comm[15] = '\0';
  s.held_count = 0;  // a child after fork holds none of its parent's locks
  s.abandoned_count = 0;
  s.ready = 1;
  return s;
}

}  // namespace locktable::detail
