// Open-file-description byte-range locks (F_OFD_SETLK / F_OFD_SETLKW).
//
// Unlike classic fcntl locks, an OFD lock belongs to the open file description,
// not the process: two descriptions opened by two threads of one process
// exclude each other, closing another descriptor of the same file does not drop
// the lock, and the kernel drops it when the last descriptor of the description
// closes (or the process dies). The locked bytes lie far beyond the end of the
// file (see table_format.h), so they never interfere with I/O.
#pragma once

#include <cstdint>

namespace locktable::detail {

enum class OfdKind { shared, exclusive };

// Returns 0 or an errno value (EAGAIN/EACCES when `wait` is false and it is held).
int ofd_lock(int fd, int64_t byte, OfdKind kind, bool wait);
int ofd_unlock(int fd, int64_t byte);

// RAII exclusive lock on one byte of a fresh open file description of `path`,
// so that it excludes other threads of this process as well.
class OfdGuard {
 public:
  OfdGuard() = default;
  ~OfdGuard();
  OfdGuard(const OfdGuard&) = delete;
  OfdGuard& operator=(const OfdGuard&) = delete;

  // Opens `dirfd`-relative `name` and locks `byte` exclusively, waiting.
  int lock(int dirfd, const char* name, int64_t byte);
  void unlock();

 private:
  int fd_ = -1;
};

}  // namespace locktable::detail
