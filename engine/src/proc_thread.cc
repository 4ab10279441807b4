#include "proc_thread.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace locktable::detail {

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

const ThreadIdentity& calling_thread() {
  thread_local ThreadIdentity me;
  const uint32_t pid = uint32_t(::getpid());
  if (me.pid != pid) {
    me.pid = pid;
    me.tid = uint32_t(::gettid());
    uint64_t start = 0;
    char state = 0;
    me.start = read_thread_stat(me.pid, me.tid, &start, &state) ? uint32_t(start) : 0;
    std::memset(me.comm, 0, sizeof me.comm);
    prctl(PR_GET_NAME, me.comm, 0, 0, 0);
    me.comm[15] = '\0';
  }
  return me;
}

}  // namespace locktable::detail
