#include "table_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "crash_point.h"
#include "header_check.h"
#include "ofd_lock.h"
#include "clock.h"
#include "posix_error.h"
#include "system_info.h"

namespace locktable::detail {

namespace bip = boost::interprocess;

namespace {

// A Boost.Interprocess "memory mappable" over a descriptor we opened ourselves
// (O_CLOEXEC | O_NOFOLLOW), which bip::file_mapping cannot do.
class FdMappable {
 public:
  explicit FdMappable(int fd) : fd_(fd) {}
  bip::mapping_handle_t get_mapping_handle() const {
    bip::mapping_handle_t h;
    h.handle = fd_;
    h.is_xsi = false;
    return h;
  }

 private:
  int fd_;
};

Status create_file(int dirfd, const std::string& dir, const CreateParams& p) {
  BootId boot{};
  Status s = read_boot_id(&boot);
  if (!s.ok()) return s;
  uint64_t pidns = 0;
  s = read_pid_namespace(&pidns);
  if (!s.ok()) return s;

  format::Header h;
  format::init_header(&h, p.ring_entries, p.initial_slots, p.max_slots, pidns, boot.data(), realtime_ns(),
                      uint32_t(::getuid()), p.history_level);
  uint64_t size = format::published_end(h, 1);

  // Build the file under a private name, then link it into place atomically:
  // nobody ever opens a half-initialised table.
  std::string tmp = fmt::format("{}.tmp.{}.{}", kTableFileName, ::getpid(), ::gettid());
  std::string tmp_path = dir + "/" + tmp;
  int fd = ::openat(dirfd, tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0660);
  if (fd < 0) return posix_error(tmp_path, "create", errno);
  auto fail = [&](const char* what, int err) {
    ::close(fd);
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return posix_error(tmp_path, what, err);
  };
  if (int rc = ::posix_fallocate(fd, 0, off_t(size)); rc != 0) return fail("allocate", rc);
  if (::pwrite(fd, &h, sizeof h, 0) != ssize_t(sizeof h)) return fail("write header", errno ? errno : EIO);
  if (::fsync(fd) != 0) return fail("fsync", errno);
  ::close(fd);
  crash_point("create:before_link");
  if (::renameat2(dirfd, tmp.c_str(), dirfd, kTableFileName, RENAME_NOREPLACE) != 0) {
    int err = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    if (err != EEXIST) return posix_error(dir + "/" + kTableFileName, "create", err);
  }
  ::fsync(dirfd);
  return Status::OK();
}

}  // namespace

Status TableFile::open(int dirfd, const std::string& dir, bool create, const CreateParams& params,
                       std::unique_ptr<TableFile>* out, bool* created) {
  static std::atomic<uint64_t> next_id{1};
  std::unique_ptr<TableFile> t(new TableFile());
  t->id_ = next_id.fetch_add(1);
  t->path_ = dir + "/" + kTableFileName;
  t->dirfd_ = dirfd;
  *created = false;

  int fd = ::openat(dirfd, kTableFileName, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT && create) {
    Status s = create_file(dirfd, dir, params);
    if (!s.ok()) return s;
    *created = true;
    fd = ::openat(dirfd, kTableFileName, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Status(Code::not_found, fmt::format("{}: no table here", t->path_));
    if (err == ELOOP) return Status(Code::permission_denied, fmt::format("{}: is a symbolic link; refused", t->path_));
    if (err == EACCES) {
      return Status(Code::permission_denied,
                    fmt::format("{}: permission denied (a table needs read and write access)", t->path_));
    }
    return posix_error(t->path_, "open", err);
  }
  t->fd_ = fd;

  struct stat st;
  if (::fstat(fd, &st) != 0) return posix_error(t->path_, "stat", errno);
  if (!S_ISREG(st.st_mode)) return Status(Code::corrupt, fmt::format("{}: not a regular file", t->path_));

  // Every attached process holds this shared lock; an operation that needs the
  // table to itself takes it exclusively.
  if (int rc = ofd_lock(fd, format::kAttachLockByte, OfdKind::shared, true); rc != 0) {
    return posix_error(t->path_, "attach lock", rc);
  }

  // Header first, then the size: the file only grows, and a grower extends the
  // file before it publishes the extent count that validation checks.
  format::Header h;
  std::memset(&h, 0, sizeof h);
  ssize_t n = ::pread(fd, &h, sizeof h, 0);
  if (n < 0) return posix_error(t->path_, "read header", errno);
  if (::fstat(fd, &st) != 0) return posix_error(t->path_, "stat", errno);
  Status s = format::validate_header(h, uint64_t(st.st_size), t->path_);
  if (!s.ok()) return s;

  uint64_t pidns = 0;
  s = read_pid_namespace(&pidns);
  if (!s.ok()) return s;
  if (h.pid_namespace != pidns) {
    return Status(Code::unsupported,
                  fmt::format("{}: created in PID namespace {}, this process is in {}: holders in another PID "
                              "namespace cannot be checked for liveness",
                              t->path_, h.pid_namespace, pidns));
  }

  t->max_extents_ = format::extents_for_max_slots(h.ring_entries, h.initial_slots, h.max_slots);
  for (uint32_t k = 0; k < t->max_extents_; ++k) {
    t->geometry_.push_back(format::extent_geometry(h.ring_entries, h.initial_slots, k));
  }
  s = t->reserve_and_map();
  if (!s.ok()) return s;
  *out = std::move(t);
  return Status::OK();
}

TableFile::~TableFile() {
  // Unmap the extents (mapped_region destructors), then release exactly the
  // part of the reservation that was never mapped: never a range another
  // thread may have mapped meanwhile.
  size_t mapped_end = 0;
  if (!regions_.empty()) {
    auto& last = regions_.back();
    mapped_end = size_t(static_cast<char*>(last->get_address()) - base_) + last->get_size();
  }
  regions_.clear();
  if (base_ != nullptr && reserved_ > mapped_end) ::munmap(base_ + mapped_end, reserved_ - mapped_end);
  if (fd_ >= 0) ::close(fd_);
}

Status TableFile::reserve_and_map() {
  const format::ExtentGeometry& last = geometry_.back();
  reserved_ = size_t(last.offset + last.bytes);
  void* p = ::mmap(nullptr, reserved_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED && errno == ENOMEM) {
    return Status(Code::capacity, fmt::format("{}: cannot reserve {} bytes of address space for the table as it "
                                              "may grow (its max_slots): not enough for this process (its limit: "
                                              "ulimit -v)",
                                              path_, reserved_));
  }
  if (p == MAP_FAILED) return posix_error(path_, "reserve address space", errno);
  base_ = static_cast<char*>(p);
  try {
    FdMappable m(fd_);
    regions_.push_back(std::make_unique<bip::mapped_region>(m, bip::read_write, 0,
                                                            size_t(geometry_[0].offset), base_, MAP_FIXED));
  } catch (const bip::interprocess_exception& e) {
    return Status(Code::io_error, fmt::format("{}: map: {}", path_, e.what()));
  }
  header_ = reinterpret_cast<format::Header*>(base_);
  ring_ = reinterpret_cast<format::RingEntry*>(base_ + header_->ring_offset);
  ring_mask_ = header_->ring_entries - 1;
  return map_extents_upto(published_extents());
}

Status TableFile::map_extents_upto(uint32_t count) {
  if (count > max_extents_) return Status(Code::corrupt, fmt::format("{}: extent count {}", path_, count));
  if (mapped_extents_.load(std::memory_order_acquire) >= count) return Status::OK();
  std::lock_guard<std::mutex> lock(map_mu_);
  for (uint32_t k = mapped_extents_.load(std::memory_order_relaxed); k < count; ++k) {
    const format::ExtentGeometry& g = geometry_[k];
    try {
      FdMappable m(fd_);
      regions_.push_back(std::make_unique<bip::mapped_region>(m, bip::read_write, bip::offset_t(g.offset),
                                                              size_t(g.bytes), base_ + g.offset, MAP_FIXED));
    } catch (const bip::interprocess_exception& e) {
      return Status(Code::io_error, fmt::format("{}: map extent {}: {}", path_, k, e.what()));
    }
    mapped_extents_.store(k + 1, std::memory_order_release);
  }
  return Status::OK();
}

uint32_t TableFile::published_extents() const {
  return std::atomic_ref<uint32_t>(header_->extent_count).load(std::memory_order_acquire);
}

uint64_t TableFile::slot_capacity() const {
  uint32_t n = published_extents();
  if (n == 0 || n > max_extents_) return 0;
  return geometry_[n - 1].first_slot + geometry_[n - 1].slot_count;
}

uint64_t TableFile::reader_capacity() const {
  uint32_t n = published_extents();
  if (n == 0 || n > max_extents_) return 0;
  return geometry_[n - 1].first_reader + geometry_[n - 1].reader_count;
}

uint64_t TableFile::file_size() const {
  struct stat st;
  return ::fstat(fd_, &st) == 0 ? uint64_t(st.st_size) : 0;
}

format::Slot* TableFile::slot(uint64_t index) {
  uint32_t mapped = mapped_extents_.load(std::memory_order_acquire);
  for (uint32_t k = 0; k < max_extents_; ++k) {
    const format::ExtentGeometry& g = geometry_[k];
    if (index >= g.first_slot + g.slot_count) continue;
    if (k >= mapped) {
      uint32_t published = published_extents();
      if (k >= published || !map_extents_upto(published).ok()) return nullptr;
    }
    return reinterpret_cast<format::Slot*>(base_ + g.offset) + (index - g.first_slot);
  }
  return nullptr;
}

format::ReaderRecord* TableFile::reader(uint64_t index) {
  uint32_t mapped = mapped_extents_.load(std::memory_order_acquire);
  for (uint32_t k = 0; k < max_extents_; ++k) {
    const format::ExtentGeometry& g = geometry_[k];
    if (index >= g.first_reader + g.reader_count) continue;
    if (k >= mapped) {
      uint32_t published = published_extents();
      if (k >= published || !map_extents_upto(published).ok()) return nullptr;
    }
    return reinterpret_cast<format::ReaderRecord*>(base_ + g.offset + g.slot_count * format::kSlotSize) +
           (index - g.first_reader);
  }
  return nullptr;
}

Status TableFile::take_grow_lock(OfdGuard* guard) {
  if (int rc = guard->lock(dirfd_, kTableFileName, format::kGrowLockByte); rc != 0) {
    return posix_error(path_, "grow lock", rc);
  }
  return Status::OK();
}

Status TableFile::grow(uint64_t min_slots, uint64_t min_readers, uint32_t* extents_added) {
  *extents_added = 0;
  OfdGuard guard;
  if (Status s = take_grow_lock(&guard); !s.ok()) return s;
  for (;;) {
    uint32_t count = published_extents();
    if (slot_capacity() >= min_slots && reader_capacity() >= min_readers) break;
    if (count >= max_extents_) {
      return Status(Code::capacity, fmt::format("{}: table full: {} slots and {} reader records (max_slots {})",
                                                path_, slot_capacity(), reader_capacity(), header_->max_slots));
    }
    const format::ExtentGeometry& g = geometry_[count];
    crash_point("grow:before_allocate");
    if (int rc = ::posix_fallocate(fd_, off_t(g.offset), off_t(g.bytes)); rc != 0) {
      return posix_error(path_, "grow", rc);
    }
    crash_point("grow:after_allocate");
    header_->extents[count] = format::ExtentDescriptor{g.offset, uint32_t(g.first_slot), uint32_t(g.slot_count),
                                                       uint32_t(g.first_reader), uint32_t(g.reader_count), g.bytes};
    crash_point("grow:after_descriptor");
    std::atomic_ref<uint32_t>(header_->extent_count).store(count + 1, std::memory_order_release);
    ++*extents_added;
    crash_point("grow:after_publish");
    if (grow_observer_) grow_observer_(g.first_slot + g.slot_count);
  }
  return map_extents_upto(published_extents());
}

}  // namespace locktable::detail
