#include "system_info.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace locktable::detail {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct NetworkFs {
  long magic;
  const char* name;
};

// statfs(2) f_type values of file systems shared between machines or served
// from user space.
constexpr NetworkFs kNetworkFs[] = {
    {0x6969, "NFS"},          {0x517B, "SMB"},        {long(0xFF534D42), "CIFS"},
    {long(0xFE534D42), "SMB2"}, {0x65735546, "FUSE"},   {0x01021997, "9P"},
    {0x00C36400, "Ceph"},     {0x5346414F, "AFS"},    {0x6B414653, "AFS"},
    {0x47504653, "GPFS"},     {0x0BD00BD0, "Lustre"}, {0x013111A8, "IBRIX"},
};

}  // namespace

Status read_boot_id(BootId* id) {
  const char* path = "/proc/sys/kernel/random/boot_id";
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status(Code::unsupported, fmt::format("{}: {}", path, std::strerror(errno)));
  char buf[64] = {};
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  size_t out = 0;
  for (ssize_t i = 0; i < n && out < 32; ++i) {
    int v = hex_value(buf[i]);
    if (v < 0) continue;  // dashes, newline
    if (out % 2 == 0) (*id)[out / 2] = uint8_t(v << 4);
    else (*id)[out / 2] |= uint8_t(v);
    ++out;
  }
  if (out != 32) return Status(Code::unsupported, fmt::format("{}: unexpected contents", path));
  return Status::OK();
}

std::string boot_id_string(const BootId& id) {
  std::string s;
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", id[i]);
  }
  return s;
}

Status read_pid_namespace(uint64_t* ns) {
  struct stat st;
  if (::stat("/proc/self/ns/pid", &st) != 0) {
    return Status(Code::unsupported, fmt::format("/proc/self/ns/pid: {}", std::strerror(errno)));
  }
  *ns = st.st_ino;
  return Status::OK();
}

Status check_local_filesystem(const std::string& dir, bool allow) {
  struct statfs sf;
  if (::statfs(dir.c_str(), &sf) != 0) {
    return Status(errno == EACCES ? Code::permission_denied : Code::io_error,
                  fmt::format("{}: statfs: {}", dir, std::strerror(errno)));
  }
  if (allow) return Status::OK();
  if (const char* name = network_filesystem_name(long(sf.f_type))) {
    return Status(Code::unsupported,
                  fmt::format("{}: on a {} file system; futexes and byte-range locks do not reach other "
                              "machines (open with allow_network_fs to use it anyway)",
                              dir, name));
  }
  return Status::OK();
}

const char* network_filesystem_name(long f_type) {
  for (const NetworkFs& fs : kNetworkFs) {
    if (f_type == fs.magic || long(uint32_t(f_type)) == fs.magic) return fs.name;
  }
  return nullptr;
}

uint64_t realtime_coarse_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

}  // namespace locktable::detail
