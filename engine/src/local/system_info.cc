#include "system_info.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "posix_error.h"

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
  if (fd < 0) return posix_error_as(Code::unsupported, path, "", errno);  // no /proc: no liveness checks
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
  if (::stat("/proc/self/ns/pid", &st) != 0) return posix_error_as(Code::unsupported, "/proc/self/ns/pid", "", errno);
  *ns = st.st_ino;
  return Status::OK();
}

Status check_local_filesystem(const std::string& dir, bool allow) {
  struct statfs sf;
  if (::statfs(dir.c_str(), &sf) != 0) return posix_error(dir, "statfs", errno);
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

}  // namespace locktable::detail
