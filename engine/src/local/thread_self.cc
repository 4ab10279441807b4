#include "thread_self.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

namespace locktable::detail {

constinit thread_local ThreadSelf tls_self __attribute__((tls_model("initial-exec"))) = {};

namespace {

// Used only when the thread has no robust list registered (not glibc's nptl).
thread_local RobustHead tls_own_head = {};
// Used when the thread's robust list cannot be used (another futex_offset):
// a list the kernel never walks, so the paths need no null test.
thread_local RobustHead tls_detached_head = {};

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

ThreadSelf& thread_self_slow() {
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, reset_after_fork); });

  ThreadSelf& s = tls_self;
  const ThreadIdentity& me = calling_thread();
  s.pid = me.pid;
  s.tid = me.tid;
  s.start = me.start;
  s.owner_lo = uint64_t{s.tid} | (uint64_t{s.pid} << 32);
  s.robust = find_robust_head();
  if (s.robust == nullptr) {
    tls_detached_head.list = &tls_detached_head;
    tls_detached_head.futex_offset = kRobustFutexOffset;
    tls_detached_head.list_op_pending = nullptr;
    s.robust = &tls_detached_head;
  }
  static_assert(sizeof s.comm == sizeof me.comm);
  std::memcpy(s.comm, me.comm, sizeof s.comm);
  // A child after fork holds none of its parent's locks and owns none of its
  // parent's reader records.
  s.abandoned_count = 0;
  s.shared_count = 0;
  s.cached_count = 0;
  s.last_slot = nullptr;
  s.segment_count = 0;
  s.ready = 1;
  return s;
}

}  // namespace locktable::detail
