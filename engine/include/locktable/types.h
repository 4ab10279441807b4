// Plain value types shared by the locktable API: modes, owners, deadlines,
// acquire results, options, and the rows returned by listing and history calls.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "locktable/status.h"

namespace locktable {

// The numbers of Mode, HistoryLevel and EventKind are also the ones stored on
// disk (schema/stored_codes.h); they never change.
enum class Mode : uint8_t { exclusive = 0, shared = 1 };

// History level of a table: no events, events kept only in the in-file ring,
// or events drained from the ring into LMDB (the default).
enum class HistoryLevel : uint32_t { off = 0, ring = 1, persisted = 2 };

// The identity of a thread that holds or held a lock.
struct Owner {
  uint32_t pid = 0;
  uint32_t tid = 0;         // 0 when unknown (the kernel clears it when the owner dies)
  // Low 32 bits of the thread's start time, clock ticks since boot (what
  // tells a reused pid apart); 0 when unknown.
  uint32_t start_time = 0;
  bool operator==(const Owner&) const = default;
};

// What stops a blocking acquire before its deadline, from outside the
// waiting code: a flag a signal handler sets, another thread asking it to
// stop, Python's Ctrl-C. A waiting thread asks requested() at most every
// millisecond and at least every 50 ms while it waits (and at once when a
// signal interrupts its sleep; etcd tables: at least every 100 ms). When it
// returns true, the acquire gives up as at its deadline, with
// Code::interrupted, and leaves the lock as a timed-out waiter does.
// requested() runs on the waiting thread, which holds none of the library's
// internal locks then; it is never asked for a try (Deadline::now()), or when
// the lock is free.
class WaitInterrupt {
 public:
  virtual bool requested() = 0;

 protected:
  ~WaitInterrupt() = default;
};

// A std::stop_token as a WaitInterrupt (std::jthread's request_stop() ends
// the wait within 50 ms):
//   StopTokenInterrupt stop(token);
//   lock.acquire(Mode::exclusive, Deadline::never().interruptible_by(&stop));
class StopTokenInterrupt final : public WaitInterrupt {
 public:
  explicit StopTokenInterrupt(std::stop_token token) : token_(std::move(token)) {}
  bool requested() override { return token_.stop_requested(); }

 private:
  std::stop_token token_;
};

// When a blocking acquire gives up. Measured on the monotonic clock.
// Trivially copyable and two words: it is passed in registers on the hot path.
class Deadline {
 public:
  using clock = std::chrono::steady_clock;

  static Deadline never() { return Deadline(clock::time_point::max()); }
  static Deadline now() { return Deadline(clock::time_point::min()); }
  static Deadline at(clock::time_point when) { return Deadline(when); }
  // `d` from now: now() when d is zero, negative or NaN; never() when it
  // reaches within a second of the clock's end (about 292 years of
  // nanoseconds from boot), an infinity and seconds::max() included. The
  // bound is compared in floating point, where no count overflows.
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> d) {
    if (!(d > d.zero())) return now();
    const auto current = clock::now();
    using seconds_fp = std::chrono::duration<double>;
    if (seconds_fp(d) >= seconds_fp(clock::time_point::max() - current) - seconds_fp(1)) return never();
    return Deadline(current + std::chrono::duration_cast<clock::duration>(d));
  }
  // `t` on any clock (system_clock, say), as after(t - Clock::now()) but
  // with no overflow: time_point::max() is never(), and a time point past
  // the range of nanoseconds from now either way (time_point::min(), the
  // max() of a coarse duration) is now() or never(), not a wrapped count.
  template <class Clock, class Duration>
  static Deadline until(const std::chrono::time_point<Clock, Duration>& t) {
    if (t == std::chrono::time_point<Clock, Duration>::max()) return never();  // the usual "no end"
    const auto current = Clock::now();
    using seconds_fp = std::chrono::duration<double>;
    const seconds_fp rough = seconds_fp(t.time_since_epoch()) - seconds_fp(current.time_since_epoch());
    // Within a billion seconds (31 years) of each other both counts fit the
    // finer duration, and the exact difference is taken.
    if (rough > seconds_fp(1e9) || rough < seconds_fp(-1e9)) return after(rough);
    return after(t - current);
  }

  // The same deadline, and the wait also ends when `interrupt` says so.
  // REQUIRES: *interrupt outlives every acquire given this deadline.
  Deadline interruptible_by(WaitInterrupt* interrupt) const {
    Deadline d = *this;
    d.interrupt_ = interrupt;
    return d;
  }

  bool is_never() const { return when_ == clock::time_point::max(); }
  bool is_now() const { return when_ == clock::time_point::min(); }
  clock::time_point when() const { return when_; }
  WaitInterrupt* interrupt() const { return interrupt_; }

 private:
  explicit Deadline(clock::time_point when) : when_(when) {}
  clock::time_point when_;
  WaitInterrupt* interrupt_ = nullptr;
};
static_assert(sizeof(Deadline) == 16 && std::is_trivially_copyable_v<Deadline>, "two registers on the hot path");

// Result of Lock::acquire. The lock is held when held() is true: status is ok, or
// abandoned (then dead_owner names the holder that died and the caller must
// repair what it protected, then call Lock::mark_consistent()).
struct [[nodiscard]] AcquireResult {
  Status status;
  Owner dead_owner;
  // Held: the fencing token. It grows with every exclusive acquisition of the
  // name and never goes back, also across removal and re-creation of the name
  // and after a reboot; storage that remembers the largest token it has seen
  // can refuse a paused holder's late writes. A shared holder gets the token
  // of the exclusive epoch it reads in.
  uint64_t token = 0;

  bool held() const { return status.ok() || status.code() == Code::abandoned; }
  bool abandoned() const { return status.code() == Code::abandoned; }
};

struct Options {
  // Opening.
  bool create_if_missing = true;
  bool allow_network_fs = false;          // NFS/SMB/FUSE: futexes and OFD locks do not cross machines
  // Upper bound of the LMDB file as this process maps it (sparse). Processes
  // may differ: one whose map is smaller than the file another grew enlarges
  // its map to the file's size.
  size_t lmdb_map_size = size_t{1} << 30;
  // Drain the history ring into LMDB from a background thread every interval (0: never).
  std::chrono::milliseconds drain_interval{0};
  // A waiter that has waited this long looks for a cycle of waits it closes;
  // one member of a cycle is told Code::deadlock (0: never look).
  std::chrono::milliseconds deadlock_timeout{1000};

  // Creation only (ignored when the table exists).
  uint32_t initial_slots = 64;            // 1 to 2^30, rounded up to a power of two, at least 8
  uint64_t max_slots = uint64_t{1} << 24; // growth limit (at most 2^30)
  // History ring size (64-byte units), a power of two: about 2048 per thread
  // that appends history at once (64 threads by default), each holding about
  // 2046 events between two drains.
  uint32_t ring_entries = 1u << 17;
  HistoryLevel history = HistoryLevel::persisted;
  // History records kept in LMDB (0: unlimited). Unlimited, the history grows
  // until the LMDB file reaches lmdb_map_size; then draining, and reading
  // history at the persisted level, fail with Code::capacity naming the file
  // (taking and releasing locks goes on; new names may fail the same way).
  uint64_t retention_count = 1'000'000;
  std::chrono::seconds retention_age{std::chrono::hours(24 * 7)};  // (0: unlimited)
};

enum class LockState { free, held, shared, dead_owner };

struct HolderInfo {
  Owner owner;
  std::string comm;          // thread name, "" when the thread is gone
  bool alive = false;
  // How long it has been held (coarse clock, a few ms); unknown only in the
  // instant between the holder's CAS and its time stamp.
  std::optional<uint64_t> held_for_ms;
  uint64_t token = 0;        // the hold's fencing token
};

// A thread waiting for a lock (it published its wait: it has gone to sleep).
struct WaiterInfo {
  Owner owner;
  std::string comm;
  Mode mode = Mode::exclusive;
  uint64_t waiting_ms = 0;
};

// What a lock counted since its name was created. On etcd tables only the
// acquisitions are counted. Every count only grows.
struct LockCounters {
  uint64_t exclusive_acquisitions = 0;
  // Shared holds that ended (released, or a dead reader's taken out): a hold
  // counts when it ends; one downgraded from an exclusive hold counts too.
  uint64_t shared_acquisitions = 0;
  uint64_t contended = 0;      // acquisitions (either mode) that found the lock held and waited
  uint64_t timeouts = 0;       // acquires that gave up at their deadline
  uint64_t abandoned = 0;      // acquisitions told abandoned (a takeover, or a lock not yet marked consistent)
  uint64_t wait_total_ns = 0;  // time spent waiting, acquisitions and timeouts together (µs resolution)
  uint64_t wait_max_ns = 0;    // the longest single wait
};

// Which locks Table::list() reports.
enum class ListScope : uint8_t {
  all,   // every named lock, in name order
  busy,  // only the locks held (in either mode, or by a dead owner), abandoned or
         // waited for, in no particular order; a mapped table finds them from
         // its slots, without reading every name: a few among millions is cheap
};

// One row of Table::list().
struct LockInfo {
  std::string name;
  uint32_t slot = 0;
  uint32_t incarnation = 0;
  LockState state = LockState::free;
  Mode mode = Mode::exclusive;
  std::vector<HolderInfo> holders;   // one for exclusive, one per reader for shared
  uint32_t waiters = 0;               // threads asleep on it (may over-count briefly after a crash)
  std::vector<WaiterInfo> waiting;   // the waits published for it, oldest first
  bool abandoned = false;            // the next acquirer will be told "abandoned"
  LockCounters counters;

  // What ListScope::busy reports.
  bool busy() const { return state != LockState::free || abandoned || waiters != 0 || !waiting.empty(); }
};

struct TableStats {
  std::string dir;                  // the location
  std::string backend;              // "local" (the mapped table), ...
  uint32_t format_version = 0;
  uint64_t slot_capacity = 0;
  uint64_t max_slots = 0;
  uint64_t slots_used = 0;
  uint64_t reader_capacity = 0;
  uint64_t readers_used = 0;
  uint32_t extents = 0;
  uint64_t table_file_bytes = 0;
  uint64_t lmdb_file_bytes = 0;
  std::string boot_id;
  uint32_t reset_count = 0;
  HistoryLevel history_level = HistoryLevel::persisted;
  uint32_t ring_entries = 0;        // 64-byte units
  uint32_t ring_segments = 0;       // one per thread appending history at a time
  uint32_t ring_segments_in_use = 0;
  uint64_t ring_appended = 0;       // events appended so far (or lost for want of a segment)
  uint64_t ring_accounted = 0;      // of those, in LMDB or counted lost (= appended once drained)
  uint64_t history_records = 0;     // records in LMDB
  uint64_t history_lost = 0;        // events counted lost so far
  uint64_t retention_count = 0;
  uint64_t retention_age_s = 0;
  uint64_t time_resolution_ns = 1;  // of the clock that stamps history events
  LockCounters counters;            // every named lock's, added up
};

// What Table::recover did (or would do) about one dead holder or leftover.
struct Recovery {
  std::string name;
  uint32_t slot = 0;
  Mode mode = Mode::exclusive;
  Owner dead_owner;
  std::string action;   // "freed", "freed reader", "finished removal", ...
};

enum class EventKind : uint8_t {
  created = 1, removed, acquired, released, recovered, timeout, grown, reset, lost, deadlock, downgraded,
};
const char* event_kind_name(EventKind kind);
std::optional<EventKind> event_kind_from_name(std::string_view name);

struct Event {
  uint64_t seq = 0;
  uint64_t time_ns = 0;       // wall clock, ns since the epoch (TableStats::time_resolution_ns)
  EventKind kind = EventKind::acquired;
  Mode mode = Mode::exclusive;
  bool abandoned = false;     // acquired: taken over from a dead holder
  uint32_t pid = 0;
  uint32_t tid = 0;
  std::string comm;
  std::string name;
  uint32_t slot = 0;
  uint64_t wait_ns = 0;       // acquired, timeout, deadlock
  uint64_t hold_ns = 0;       // released
  Owner dead_owner;           // recovered
  uint64_t count = 0;         // lost: events dropped; grown: new capacity; reset: locks freed
  uint64_t token = 0;         // acquired, released, downgraded: the hold's fencing token
};

struct HistoryQuery {
  std::optional<std::string> name;
  std::optional<EventKind> kind;
  std::optional<uint32_t> pid;
  uint64_t since_ns = 0;                 // inclusive
  uint64_t until_ns = UINT64_MAX;        // exclusive
  uint64_t after_seq = 0;                // only seq > after_seq (0: all)
  size_t limit = 0;                      // 0: all; otherwise the newest `limit` matching
  bool newest_first = false;
};

}  // namespace locktable
