// A thin RAII layer over LMDB for the table folder's environment: the env with
// its named databases, transactions, cursors, and LMDB errors turned into
// Status values that name the file. Raw MDB_val never leaves this layer:
// callers see keys and values as std::string_view (valid until the
// transaction ends or the next write).
#pragma once

#include <lmdb.h>

#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "locktable/status.h"
#include "ofd_lock.h"

namespace locktable::detail {

struct Dbis {
  MDB_dbi meta = 0;
  MDB_dbi names = 0;
  MDB_dbi slots = 0;
  MDB_dbi free = 0;
  MDB_dbi graveyard = 0;
  MDB_dbi history = 0;
  MDB_dbi history_by_name = 0;
};

// LMDB's two lock-file mutexes are robust pthread mutexes. When a holder dies
// the kernel marks the mutex and wakes ONE waiter; if that waiter is killed
// before it takes the mutex, the wake-up is lost (its pending-op entry names a
// mutex that is neither free nor its own, so the kernel does nothing) and the
// other waiters sleep forever. The kill torture hit this on both mutexes. So
// every path into either mutex first takes a gate, an exclusive OFD lock on a
// byte of the table file: behind it at most one process at a time waits on the
// mutex, and it never sleeps on it (it finds it free, or owner-died). OFD lock
// waiters are all woken when the lock is released or its holder dies, so none
// is lost.
//   writer mutex  write transactions: kWriterLockByte, held until commit/abort.
//   reader mutex  taken by LMDB to register a read transaction's reader slot,
//                 by mdb_reader_check, and by a writer recovering the writer
//                 mutex from a dead owner: kReaderMutexByte around each of
//                 these. Read transactions are kept (reset, in a pool) and
//                 renewed, which needs no mutex, so a lookup rarely pays for it.
//
// MAP SIZE. Each process maps data.mdb with its own Options::lmdb_map_size.
// When another process, with a larger map, grows the file beyond this
// process's map, LMDB refuses every new transaction here (MDB_MAP_RESIZED)
// until the map is enlarged, which LMDB allows only while no transaction of
// the process is open (the map moves). So every Txn holds map_mu_ shared
// from begin to end, and a begin refused so adopts the file's size under it
// exclusively (adopt_grown_map), then begins again. A process that opens a
// file already larger than its map adopts the size the file records at once.
// The largest map Options::lmdb_map_size may ask for: far beyond any table,
// well inside x86-64's 128 TiB of user address space.
inline constexpr size_t kMaxLmdbMapSize = size_t{1} << 46;

class LmdbEnv {
 public:
  // Opens (creating if `create`) the environment in `dir` (data.mdb, lock.mdb).
  // The gates are bytes of `gate_file` (relative to `gate_dirfd`; -1: no gates).
  static Status open(const std::string& dir, size_t map_size, bool create, int gate_dirfd, const char* gate_file,
                     std::unique_ptr<LmdbEnv>* out);
  ~LmdbEnv();

  MDB_env* env() const { return env_; }
  const Dbis& dbi() const { return dbi_; }
  const std::string& path() const { return path_; }  // dir/data.mdb, for messages

  Status error(int rc, std::string_view what) const;

  // mdb_reader_check behind the reader-mutex gate: frees dead readers' slots.
  Status reader_check() const;

 private:
  LmdbEnv() = default;
  friend class Txn;
  // Takes gate `byte` into `guard` (no-op without gates).
  Status lock_gate(OfdGuard& guard, int64_t byte) const;
  MDB_txn* take_pooled() const;
  void give_back(MDB_txn* txn) const;
  // Enlarges this process's map to the file's size (MDB_MAP_RESIZED).
  // REQUIRES: the calling thread holds no transaction of this environment (it
  // would wait for itself: the wait is bounded, and then it fails).
  Status adopt_grown_map() const;

  MDB_env* env_ = nullptr;
  Dbis dbi_;
  std::string path_;
  int gate_dirfd_ = -1;
  const char* gate_file_ = nullptr;
  mutable std::shared_timed_mutex map_mu_;  // shared: an open Txn; exclusive: the map is being enlarged
  mutable std::mutex pool_mu_;
  mutable std::vector<MDB_txn*> pool_;  // reset read transactions, reader slots kept
};

// A transaction. A write transaction first takes the writer gate (see LmdbEnv),
// then LMDB's writer mutex, and releases both at commit or abort. A read
// transaction is renewed from the pool when it can be, and goes back to it.
// REQUIRES (write): the calling thread holds no other transaction of the
// environment (LMDB's rule; the gate would also deadlock against itself).
class Txn {
 public:
  Txn(const LmdbEnv& env, bool write) : env_(env), write_(write) {}
  ~Txn() { abort(); }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  Status begin();
  Status commit();
  void abort();

  MDB_txn* get() const { return txn_; }
  const LmdbEnv& env() const { return env_; }

  // found == false (and ok) when the key is missing.
  Status get(MDB_dbi dbi, std::string_view key, std::string_view* value, bool* found) const;
  Status put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags = 0);
  // put() of a key expected to sort after every key in `dbi` (how = MDB_APPEND:
  // no search, full pages), or of a duplicate expected to sort after every
  // duplicate of its key (how = MDB_APPENDDUP). Out of order, it is a plain put.
  Status append(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned how = MDB_APPEND);
  Status del(MDB_dbi dbi, std::string_view key, const std::string_view* value = nullptr);
  Status get_u64(std::string_view key, uint64_t* value, uint64_t fallback) const;  // from meta
  Status put_u64(std::string_view key, uint64_t value);
  // Number of records in `dbi`.
  Status entries(MDB_dbi dbi, uint64_t* count) const;

  // Calls visit(key, value) for each record of `dbi` in key order, from the
  // first key >= `from` (every record when empty), until visit returns false.
  // The status is an LMDB error, never visit's choice to stop.
  using Visit = std::function<bool(std::string_view key, std::string_view value)>;
  Status for_each(MDB_dbi dbi, const Visit& visit, std::string_view from = {}) const;
  // The same over the sorted duplicates of `key` in a MDB_DUPSORT database.
  Status for_each_duplicate(MDB_dbi dbi, std::string_view key, const Visit& visit) const;
  // Both backwards, from the last key (duplicate) to the first.
  Status for_each_backward(MDB_dbi dbi, const Visit& visit) const;
  Status for_each_duplicate_backward(MDB_dbi dbi, std::string_view key, const Visit& visit) const;

 private:
  // The cursor walk behind the for_each calls: position with `first` (an
  // MDB_cursor_op) at `key`, then with `then` if it is not -1, then step
  // with `next`.
  Status walk(MDB_dbi dbi, std::string_view key, int first, int then, int next, const Visit& visit) const;

  // One attempt of begin(); MDB_MAP_RESIZED comes back as *rc.
  Status try_begin(int* rc);

  const LmdbEnv& env_;
  bool write_;
  MDB_txn* txn_ = nullptr;
  OfdGuard gate_;
  std::shared_lock<std::shared_timed_mutex> map_;  // held while txn_ is open (see MAP SIZE)
};

// A cursor for walks that delete as they go (retention, pruning). Each move
// returns true when it lands on a record; false at the end or on an error
// (then status() says which).
class Cursor {
 public:
  Cursor(const Txn& txn, MDB_dbi dbi);
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  Status status() const;
  bool first();
  bool next();
  std::string_view key() const;
  std::string_view value() const;
  // Deletes the record under the cursor, then moves to the one after it.
  // REQUIRES: the transaction is a write transaction.
  bool erase_and_next();

 private:
  bool move(int op);
  const Txn& txn_;
  MDB_cursor* cur_ = nullptr;
  int rc_ = 0;
  MDB_val key_{0, nullptr}, value_{0, nullptr};
};

}  // namespace locktable::detail
