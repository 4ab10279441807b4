// TableFile: the memory-mapped table file of one table folder.
//
// Mapping. At open, the process reserves one range of address space large
// enough for the table at its maximum size (PROT_NONE, no memory committed)
// and maps the header, the ring and every published extent into it at their
// file offsets (Boost.Interprocess mapped_region with MAP_FIXED). A slot's
// address is therefore fixed for the life of the TableFile: growth maps new
// extents after the old ones and never moves anything. An extent published by
// another process is mapped the first time this process needs a slot in it.
//
// Growth. Growers serialise on an exclusive OFD lock on kGrowLockByte. A grower
// (1) extends the file with posix_fallocate (so later page faults cannot SIGBUS
// on a full disk), (2) writes the extent descriptor, (3) publishes extent_count
// with a release store. New extents are all zeroes, which is a valid "free,
// never used" state for slots and reader records, so nothing needs
// initialising. A grower killed between steps leaves either a longer file
// (harmless, reused by the next grower) or a written but unpublished
// descriptor (overwritten by the next grower).
//
// Reboot. The reset after a reboot (slot_lifecycle.h) also runs under the
// grow lock.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "locktable/status.h"
#include "locktable/types.h"
#include "ofd_lock.h"
#include "table_format.h"

namespace boost::interprocess {
class mapped_region;
}

namespace locktable::detail {

inline constexpr const char* kTableFileName = "table";

struct CreateParams {
  uint32_t initial_slots;
  uint64_t max_slots;
  uint32_t ring_entries;
  uint32_t history_level;  // format::kHistory*
};

class TableFile {
 public:
  // Opens `dir`/table (dirfd is an O_PATH/O_DIRECTORY descriptor of `dir`),
  // creating it when missing and `create` is set. `*created` tells which.
  static Status open(int dirfd, const std::string& dir, bool create, const CreateParams& params,
                     std::unique_ptr<TableFile>* out, bool* created);
  ~TableFile();

  const std::string& path() const { return path_; }
  // Unique within the process, never reused (per-thread caches key on it).
  uint64_t id() const { return id_; }
  int fd() const { return fd_; }

  format::Header* header() const { return header_; }
  format::RingEntry* ring() const { return ring_; }
  uint32_t ring_mask() const { return ring_mask_; }

  // Published capacities (what any process may use).
  uint32_t published_extents() const;
  uint64_t slot_capacity() const;
  uint64_t reader_capacity() const;
  uint64_t file_size() const;

  // Address of slot / reader record `index`, mapping newly published extents if
  // needed (under map_mu_); nullptr when `index` is beyond the published
  // capacity.
  format::Slot* slot(uint64_t index);
  format::ReaderRecord* reader(uint64_t index);

  // Grows the table until it has at least `min_slots` slots (or, with
  // min_readers, reader records). capacity error at max_slots. Every extent
  // published calls the grow observer with the new slot capacity. Takes the
  // grow lock: may be called inside an LMDB write transaction (name
  // creation), never the other way round (lock order: engine/README.md).
  Status grow(uint64_t min_slots, uint64_t min_readers, uint32_t* extents_added);
  void set_grow_observer(std::function<void(uint64_t)> observer) { grow_observer_ = std::move(observer); }

  // The exclusive OFD lock that serialises growers and the reboot reset,
  // held until *guard is destroyed (lock order: engine/README.md).
  // REQUIRES: the caller holds no map_mu_ (map_extents_upto takes it).
  Status take_grow_lock(OfdGuard* guard);

 private:
  TableFile() = default;
  Status map_extents_upto(uint32_t count);
  Status reserve_and_map();

  std::string path_;
  uint64_t id_ = 0;
  int dirfd_ = -1;
  int fd_ = -1;
  format::Header* header_ = nullptr;
  format::RingEntry* ring_ = nullptr;
  uint32_t ring_mask_ = 0;
  char* base_ = nullptr;
  size_t reserved_ = 0;
  uint32_t max_extents_ = 0;
  std::vector<format::ExtentGeometry> geometry_;  // of every possible extent

  std::function<void(uint64_t)> grow_observer_;
  std::mutex map_mu_;
  std::atomic<uint32_t> mapped_extents_{0};
  std::vector<std::unique_ptr<boost::interprocess::mapped_region>> regions_;
};

}  // namespace locktable::detail
