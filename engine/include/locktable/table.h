// Table: a persistent table of named interprocess locks.
//
// A table lives at a location. A folder path (or a file:///absolute/path URL)
// is a table on this machine, a folder holding:
//   table      the memory-mapped lock table (one 128-byte slot per lock)
//   data.mdb   an LMDB environment: lock names, and the lock history
//   lock.mdb   (LMDB's own lock file)
// Every process that opens the location shares the same locks. Other schemes
// name other backends (engine/README.md, "The backend seam"); one this build
// does not have is refused with `unsupported`. See the top README for
// semantics and engine/README.md for the protocol.
//
// A Table object may be used by any number of threads. In a child after
// fork() its calls fail with `unsupported`: open the table again in the child
// (Locks of a mapped table obtained before the fork keep working for
// acquire/release).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "locktable/lock.h"
#include "locktable/names.h"
#include "locktable/status.h"
#include "locktable/types.h"

namespace locktable {

namespace detail {
class Backend;
}

// Whether Table::lookup allocates a slot for a name it does not know.
enum class Lookup { create_if_missing, existing };

// One lock of Table::acquire_all: a handle of the table, and the mode.
struct LockRequest {
  Lock* lock = nullptr;
  Mode mode = Mode::exclusive;
};

// Result of Table::acquire_all. Every lock is held when held() is true:
// status is ok, or abandoned when some were taken over from dead holders
// (`abandoned` lists them; repair each, then mark_consistent() it).
// Otherwise none is held and status is the error that stopped it.
struct [[nodiscard]] AcquireAllResult {
  Status status;
  std::vector<size_t> abandoned;  // indices into the requests, ascending
  std::vector<Owner> dead_owners; // dead_owners[k]: the holder that died holding requests[abandoned[k]]
  std::vector<uint64_t> tokens;   // held: tokens[i] is the fencing token of requests[i]
  bool held() const { return status.ok() || status.code() == Code::abandoned; }
};

class Table {
 public:
  // Opens (and, if options.create_if_missing, creates) the table at
  // `location`. The options are checked before anything is created.
  // Errors: invalid_argument (bad options or location), not_found (no table
  // and not creating), corrupt, version_mismatch, unsupported (an unknown
  // scheme, a network file system, another PID namespace),
  // permission_denied, io_error. Messages name the file and the problem.
  static Status open(const std::string& location, const Options& options, std::unique_ptr<Table>* table);

  ~Table();
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  // The location the table was opened with.
  const std::string& dir() const;

  // Returns a handle for `name` (1 to 255 bytes, no NUL). With
  // Lookup::create_if_missing a new name gets a free slot (one LMDB write
  // transaction; the table grows when full). An existing name costs one LMDB
  // read transaction. Errors: invalid_argument, not_found, capacity.
  Status lookup(std::string_view name, Lock* lock, Lookup mode = Lookup::create_if_missing);

  // The same for many names at once: one LMDB read transaction, and one write
  // transaction for all the names that must be created. locks[i] is the
  // handle of names[i].
  Status lookup(const std::vector<std::string>& names, std::vector<Lock>* locks,
                Lookup mode = Lookup::create_if_missing);

  // Removes a name and frees its slot. Handles to it fail with stale_handle
  // afterwards. Errors: not_found, busy (held, shared or exclusive).
  Status remove(std::string_view name);

  // Takes every lock of `requests`, each in its mode, all or nothing, waiting
  // at most until `deadline`. The locks are taken in one canonical order (by
  // name), so acquire_all callers never deadlock with one another whatever
  // order they list the locks in. On a timeout or any error the locks taken
  // so far are released again (an abandoned one stays abandoned). Errors:
  // invalid_argument (an empty handle, one of another table, a name twice),
  // and those of Lock::acquire (timed_out, interrupted, deadlock, already_held, ...).
  AcquireAllResult acquire_all(const std::vector<LockRequest>& requests, Deadline deadline = Deadline::never());
  // Releases every lock of `requests` (in the reverse order); the first error.
  Status release_all(const std::vector<LockRequest>& requests);

  // Every named lock with its state, holders and waiters, in name order (or
  // only the busy ones: ListScope); with a `prefix`, only the names that begin
  // with it (read as a range: a few among millions is cheap).
  Status list(std::vector<LockInfo>* locks, ListScope scope = ListScope::all, std::string_view prefix = {});
  // The same, one lock at a time, without holding them all in memory; a
  // non-ok status returned by `visit` stops the listing and is returned.
  Status list(const std::function<Status(const LockInfo&)>& visit, ListScope scope = ListScope::all,
              std::string_view prefix = {});
  Status stats(TableStats* stats);

  // Frees locks whose holders are dead (the next acquirer is still told
  // "abandoned"), and finishes work a crashed process left half-done.
  // With dry_run, only reports.
  Status recover(bool dry_run, std::vector<Recovery>* actions);

  // Verifies the header, the slots, the reader records, the LMDB name map and
  // the history records against each other. Each inconsistency is one line in
  // `problems`; the status is an error only when the check itself cannot run.
  Status check(std::vector<std::string>* problems);

  // History. drain_history moves the events appended before the call from the
  // ring into LMDB, counting those the ring no longer holds as lost (a no-op
  // unless the history level is persisted); events appended during the call
  // wait for the next drain. history() drains, then reads. At level ring
  // nothing is stored: history() reads what the ring holds, numbered after
  // the stored events in the order a drain would store them, so an event's
  // seq (and what after_seq selects) moves as the ring laps.
  Status drain_history(uint64_t* drained = nullptr);
  Status history(const HistoryQuery& query, std::vector<Event>* events);
  Status set_history_level(HistoryLevel level);
  Status set_retention(uint64_t count, std::chrono::seconds age);

 private:
  explicit Table(std::shared_ptr<detail::Backend> backend);
  std::shared_ptr<detail::Backend> backend_;
};

}  // namespace locktable
