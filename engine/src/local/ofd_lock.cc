#include "ofd_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace locktable::detail {

int ofd_lock(int fd, int64_t byte, OfdKind kind, bool wait) {
  struct flock fl {};
  fl.l_type = kind == OfdKind::exclusive ? F_WRLCK : F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  fl.l_pid = 0;  // required for OFD locks
  for (;;) {
    if (::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

int ofd_unlock(int fd, int64_t byte) {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  fl.l_pid = 0;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

OfdGuard::~OfdGuard() { unlock(); }

int OfdGuard::lock(int dirfd, const char* name, int64_t byte) {
  unlock();
  fd_ = ::openat(dirfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd_ < 0) return errno;
  int rc = ofd_lock(fd_, byte, OfdKind::exclusive, true);
  if (rc != 0) unlock();
  return rc;
}

void OfdGuard::unlock() {
  if (fd_ >= 0) ::close(fd_);  // closing the description drops its locks
  fd_ = -1;
}

}  // namespace locktable::detail
