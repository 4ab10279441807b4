// Facts about the machine and the file system that the table header records
// or that decide whether a table may be used here.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "locktable/status.h"

namespace locktable::detail {

using BootId = std::array<uint8_t, 16>;

// /proc/sys/kernel/random/boot_id as 16 bytes.
Status read_boot_id(BootId* id);
std::string boot_id_string(const BootId& id);

// Inode of /proc/self/ns/pid: identifies the caller's PID namespace.
Status read_pid_namespace(uint64_t* ns);

// Refuses folders on file systems where futexes and byte-range locks do not
// reach every user of the file (NFS, SMB/CIFS, FUSE, 9p, Ceph, ...), unless
// `allow` is set.
Status check_local_filesystem(const std::string& dir, bool allow);

// The name of a statfs(2) f_type that is shared between machines or served
// from user space ("NFS", "FUSE", ...), or nullptr for a local file system.
const char* network_filesystem_name(long f_type);

}  // namespace locktable::detail
