// A thin RAII layer over LMDB for the table folder's environment: the env with
// its named databases, transactions, and LMDB errors turned into Status values
// that name the file.
#pragma once

#include <lmdb.h>

#include <memory>
#include <string>
#include <string_view>

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

class LmdbEnv {
 public:
  // Opens (creating if `create`) the environment in `dir` (data.mdb, lock.mdb).
  static Status open(const std::string& dir, size_t map_size, bool create, std::unique_ptr<LmdbEnv>* out);
  ~LmdbEnv();

  // Gates write transactions with an exclusive OFD lock on kWriterLockByte of
  // `dirfd`/`file` (the table file); without it they go straight to LMDB.
  void set_writer_gate(int dirfd, const char* file) {
    gate_dirfd_ = dirfd;
    gate_file_ = file;
  }

  MDB_env* env() const { return env_; }
  const Dbis& dbi() const { return dbi_; }
  const std::string& path() const { return path_; }  // dir/data.mdb, for messages

  Status error(int rc, std::string_view what) const;

 private:
  LmdbEnv() = default;
  friend class Txn;
  MDB_env* env_ = nullptr;
  Dbis dbi_;
  std::string path_;
  int gate_dirfd_ = -1;
  const char* gate_file_ = nullptr;
};

// A transaction. A write transaction first takes the writer gate, an OFD
// lock, then LMDB's writer mutex, and releases both at commit or abort.
//
// Why the gate: LMDB's writer mutex is a robust pthread mutex. When its holder
// dies the kernel marks it and wakes ONE waiter; if that waiter is killed
// before it takes the mutex, the wake-up is lost (its pending-op entry names a
// mutex that is neither free nor its own, so the kernel does nothing) and the
// other waiters sleep forever. The kill torture hit this. Behind the gate at
// most one process at a time waits on the mutex, and a waiter never sleeps on
// it: it finds it free, or owner-died. OFD lock waiters are all woken when the
// lock is released or its holder's descriptor closes, so none is lost.
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
  Status del(MDB_dbi dbi, std::string_view key, const std::string_view* value = nullptr);
  Status get_u64(std::string_view key, uint64_t* value, uint64_t fallback) const;  // from meta
  Status put_u64(std::string_view key, uint64_t value);

 private:
  const LmdbEnv& env_;
  bool write_;
  MDB_txn* txn_ = nullptr;
  OfdGuard gate_;
};

inline MDB_val to_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view from_val(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// RAII cursor.
class Cursor {
 public:
  Cursor(const Txn& txn, MDB_dbi dbi);
  ~Cursor();
  MDB_cursor* get() const { return cur_; }
  bool ok() const { return rc_ == 0; }
  int rc() const { return rc_; }

 private:
  MDB_cursor* cur_ = nullptr;
  int rc_ = 0;
};

}  // namespace locktable::detail
