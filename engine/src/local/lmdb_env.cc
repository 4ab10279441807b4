#include "lmdb_env.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "lmdb_records.h"
#include "posix_error.h"
#include "table_format.h"

namespace locktable::detail {

namespace {
MDB_val to_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view from_val(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// True when the file system holding `path` has (almost) no room left for
// this process: LMDB reports a short write, which is what a full disk
// gives, as EIO.
bool file_system_full(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return false;
  const uint64_t blocks = ::geteuid() == 0 ? st.f_bfree : st.f_bavail;
  return blocks * st.f_frsize < (uint64_t{1} << 20);
}
}  // namespace

Status LmdbEnv::error(int rc, std::string_view what) const {
  if (rc == EIO && file_system_full(path_)) {
    return Status(Code::capacity, fmt::format("{}: {}: no space left on the file system", path_, what));
  }
  // LMDB's own codes are negative; the rest are errno values (posix_error.h).
  Code code = rc > 0 ? code_for_errno(rc) : Code::io_error;
  switch (rc) {
    case MDB_MAP_FULL:
      code = Code::capacity;
      break;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
      code = Code::corrupt;
      break;
    case MDB_VERSION_MISMATCH:
      code = Code::version_mismatch;
      break;
    default:
      break;
  }
  return Status(code, fmt::format("{}: {}: {}", path_, what, mdb_strerror(rc)));
}

Status LmdbEnv::open(const std::string& dir, size_t map_size, bool create, int gate_dirfd, const char* gate_file,
                     std::unique_ptr<LmdbEnv>* out) {
  std::unique_ptr<LmdbEnv> e(new LmdbEnv());
  e->path_ = dir + "/data.mdb";
  e->gate_dirfd_ = gate_dirfd;
  e->gate_file_ = gate_file;
  if (!create) {
    struct stat st;
    if (::stat(e->path_.c_str(), &st) != 0) return posix_error(e->path_, "", errno);
  }
  int rc = mdb_env_create(&e->env_);
  if (rc != 0) return e->error(rc, "create environment");
  mdb_env_set_maxdbs(e->env_, 8);
  mdb_env_set_mapsize(e->env_, map_size);
  mdb_env_set_maxreaders(e->env_, 1022);
  // MDB_NOTLS: a read transaction is not tied to the thread that began it.
  // MDB_NOMETASYNC: one fsync per commit instead of two; a power loss may undo
  // the last commit, never corrupt (the reboot reset then reconciles slots).
  rc = mdb_env_open(e->env_, dir.c_str(), MDB_NOTLS | MDB_NOMETASYNC, 0660);
  if (rc == ENOMEM) {
    return Status(Code::capacity, fmt::format("{}: cannot map {} bytes (Options::lmdb_map_size): not enough address "
                                              "space for this process (its limit: ulimit -v)",
                                              e->path_, map_size));
  }
  if (rc != 0) return e->error(rc, "open");
  // A file larger than map_size (another process, with a larger map, grew
  // it): LMDB maps only its used part, and the next write that needs a page
  // finds the map full. Adopt the map size the file records (MAP SIZE).
  if (MDB_envinfo info; mdb_env_info(e->env_, &info) == 0 && info.me_mapsize > map_size) {
    if (Status s = e->adopt_grown_map(); !s.ok()) return s;
  }
  if (Status s = e->reader_check(); !s.ok()) return s;  // clear reader slots of dead processes

  Txn txn(*e, true);
  Status s = txn.begin();
  if (!s.ok()) return s;
  struct Named {
    const char* name;
    MDB_dbi* dbi;
    unsigned flags;
  } named[] = {
      {"meta", &e->dbi_.meta, 0},
      {"names", &e->dbi_.names, 0},
      {"slots", &e->dbi_.slots, 0},
      {"free", &e->dbi_.free, 0},
      {"graveyard", &e->dbi_.graveyard, 0},
      {"history", &e->dbi_.history, 0},
      {"history_by_name", &e->dbi_.history_by_name, MDB_DUPSORT | MDB_DUPFIXED},
  };
  for (const Named& n : named) {
    rc = mdb_dbi_open(txn.get(), n.name, n.flags | MDB_CREATE, n.dbi);
    if (rc != 0) return e->error(rc, fmt::format("open database '{}'", n.name));
  }
  uint64_t fmt_version = 0;
  s = txn.get_u64(format::kMetaFormat, &fmt_version, 0);
  if (!s.ok()) return s;
  if (fmt_version == 0) {
    s = txn.put_u64(format::kMetaFormat, format::kLmdbFormat);
    if (!s.ok()) return s;
  } else if (fmt_version != format::kLmdbFormat) {
    return Status(Code::version_mismatch, fmt::format("{}: record format version {}, this build reads version {}",
                                                      e->path_, fmt_version, format::kLmdbFormat));
  }
  s = txn.commit();
  if (!s.ok()) return s;
  *out = std::move(e);
  return Status::OK();
}

LmdbEnv::~LmdbEnv() {
  for (MDB_txn* t : pool_) mdb_txn_abort(t);
  if (env_ != nullptr) mdb_env_close(env_);
}

Status LmdbEnv::lock_gate(OfdGuard& guard, int64_t byte) const {
  if (gate_dirfd_ < 0) return Status::OK();
  if (int e = guard.lock(gate_dirfd_, gate_file_, byte); e != 0) {
    return posix_error(path_, fmt::format("{} gate on {}", byte == format::kWriterLockByte ? "writer" : "reader",
                                          gate_file_),
                       e);
  }
  return Status::OK();
}

Status LmdbEnv::reader_check() const {
  OfdGuard gate;
  if (Status s = lock_gate(gate, format::kReaderMutexByte); !s.ok()) return s;
  int dead = 0;
  int rc = mdb_reader_check(env_, &dead);
  return rc == 0 ? Status::OK() : error(rc, "reader check");
}

MDB_txn* LmdbEnv::take_pooled() const {
  std::lock_guard<std::mutex> guard(pool_mu_);
  if (pool_.empty()) return nullptr;
  MDB_txn* t = pool_.back();
  pool_.pop_back();
  return t;
}

void LmdbEnv::give_back(MDB_txn* txn) const {
  // Each pooled transaction keeps one of the environment's 1022 reader slots.
  constexpr size_t kPoolMax = 4;
  mdb_txn_reset(txn);
  {
    std::lock_guard<std::mutex> guard(pool_mu_);
    if (pool_.size() < kPoolMax) {
      pool_.push_back(txn);
      return;
    }
  }
  mdb_txn_abort(txn);
}

Status LmdbEnv::adopt_grown_map() const {
  std::unique_lock<std::shared_timed_mutex> alone(map_mu_, std::defer_lock);
  if (!alone.try_lock_for(std::chrono::seconds(2))) {
    return Status(Code::io_error, fmt::format("{}: another process grew the file beyond this process's map, and a "
                                              "transaction of this process stayed open for 2 s while this one waited "
                                              "to enlarge the map",
                                              path_));
  }
  int rc = mdb_env_set_mapsize(env_, 0);  // 0: the size the file needs
  return rc == 0 ? Status::OK() : error(rc, "enlarge the map to the file's size");
}

Status Txn::begin() {
  // A begin refused because another process grew the file (MAP SIZE)
  // enlarges the map and tries again; a second refusal would mean the file
  // grew again in between.
  for (int attempt = 0;; ++attempt) {
    int rc = 0;
    Status s = try_begin(&rc);
    if (rc != MDB_MAP_RESIZED || attempt == 2) return s;
    if (Status a = env_.adopt_grown_map(); !a.ok()) return a;
  }
}

Status Txn::try_begin(int* rc) {
  map_ = std::shared_lock<std::shared_timed_mutex>(env_.map_mu_);
  auto refused = [&](int code, Status s) {
    txn_ = nullptr;
    gate_.unlock();
    map_.unlock();
    *rc = code;
    return s;
  };
  if (!write_) {
    // A pooled transaction keeps its reader slot: renewing it takes no mutex.
    while (MDB_txn* t = env_.take_pooled()) {
      if (mdb_txn_renew(t) == 0) {
        txn_ = t;
        return Status::OK();
      }
      mdb_txn_abort(t);
    }
  } else if (Status s = env_.lock_gate(gate_, format::kWriterLockByte); !s.ok()) {
    return refused(0, s);
  }
  // A new read transaction registers a reader slot under the reader mutex; a
  // writer that finds the writer mutex owner-died checks readers under it too.
  OfdGuard reader_gate;
  if (Status s = env_.lock_gate(reader_gate, format::kReaderMutexByte); !s.ok()) return refused(0, s);
  int code = mdb_txn_begin(env_.env(), nullptr, write_ ? 0 : MDB_RDONLY, &txn_);
  if (code == MDB_READERS_FULL) {
    // Dead processes' reader slots come back by a reader check (the reader
    // gate is held: LMDB's call directly, not reader_check(), which takes it).
    int dead = 0;
    if (mdb_reader_check(env_.env(), &dead) == 0 && dead > 0) {
      code = mdb_txn_begin(env_.env(), nullptr, MDB_RDONLY, &txn_);
    }
  }
  if (code == MDB_READERS_FULL) {
    unsigned slots = 0;
    mdb_env_get_maxreaders(env_.env(), &slots);
    return refused(code, Status(Code::capacity, fmt::format("{}: all {} LMDB reader slots are taken by threads of live "
                                                            "processes (as many read the table at once at most)",
                                                            env_.path(), slots)));
  }
  if (code != 0) return refused(code, env_.error(code, write_ ? "begin write transaction" : "begin read transaction"));
  return Status::OK();
}

Status Txn::commit() {
  if (txn_ == nullptr) return Status::OK();
  if (!write_) {
    env_.give_back(txn_);
    txn_ = nullptr;
    map_.unlock();
    return Status::OK();
  }
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;
  gate_.unlock();
  map_.unlock();
  return rc == 0 ? Status::OK() : env_.error(rc, "commit");
}

void Txn::abort() {
  if (txn_ != nullptr) {
    if (write_) mdb_txn_abort(txn_);
    else env_.give_back(txn_);
    map_.unlock();
  }
  txn_ = nullptr;
  gate_.unlock();
}

Status Txn::get(MDB_dbi dbi, std::string_view key, std::string_view* value, bool* found) const {
  MDB_val k = to_val(key);
  MDB_val v;
  int rc = mdb_get(txn_, dbi, &k, &v);
  *found = rc == 0;
  if (rc == MDB_NOTFOUND) return Status::OK();
  if (rc != 0) return env_.error(rc, "read");
  *value = from_val(v);
  return Status::OK();
}

Status Txn::put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags) {
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  int rc = mdb_put(txn_, dbi, &k, &v, flags);
  return rc == 0 ? Status::OK() : env_.error(rc, "write");
}

Status Txn::append(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned how) {
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  int rc = mdb_put(txn_, dbi, &k, &v, how);
  if (rc == MDB_KEYEXIST) rc = mdb_put(txn_, dbi, &k, &v, 0);
  return rc == 0 ? Status::OK() : env_.error(rc, "write");
}

Status Txn::del(MDB_dbi dbi, std::string_view key, const std::string_view* value) {
  MDB_val k = to_val(key);
  MDB_val v;
  if (value) v = to_val(*value);
  int rc = mdb_del(txn_, dbi, &k, value ? &v : nullptr);
  if (rc == 0 || rc == MDB_NOTFOUND) return Status::OK();
  return env_.error(rc, "delete");
}

Status Txn::get_u64(std::string_view key, uint64_t* value, uint64_t fallback) const {
  std::string_view v;
  bool found = false;
  Status s = get(env_.dbi().meta, key, &v, &found);
  if (!s.ok()) return s;
  if (!found) {
    *value = fallback;
    return Status::OK();
  }
  return with_context(env_.path(), format::decode_u64(v, value, key));
}

Status Txn::put_u64(std::string_view key, uint64_t value) {
  return put(env_.dbi().meta, key, format::encode_u64(value));
}

Status Txn::entries(MDB_dbi dbi, uint64_t* count) const {
  MDB_stat st;
  int rc = mdb_stat(txn_, dbi, &st);
  if (rc != 0) return env_.error(rc, "statistics");
  *count = st.ms_entries;
  return Status::OK();
}

Status Txn::walk(MDB_dbi dbi, std::string_view key, int first, int then, int next, const Visit& visit) const {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn_, dbi, &cur);
  if (rc != 0) return env_.error(rc, "open cursor");
  MDB_val k = to_val(key), v;
  rc = mdb_cursor_get(cur, &k, &v, MDB_cursor_op(first));
  if (rc == 0 && then != -1) rc = mdb_cursor_get(cur, &k, &v, MDB_cursor_op(then));
  while (rc == 0 && visit(from_val(k), from_val(v))) rc = mdb_cursor_get(cur, &k, &v, MDB_cursor_op(next));
  mdb_cursor_close(cur);
  return rc == 0 || rc == MDB_NOTFOUND ? Status::OK() : env_.error(rc, "read");
}

Status Txn::for_each(MDB_dbi dbi, const Visit& visit, std::string_view from) const {
  return walk(dbi, from, from.empty() ? MDB_FIRST : MDB_SET_RANGE, -1, MDB_NEXT, visit);
}

Status Txn::for_each_duplicate(MDB_dbi dbi, std::string_view key, const Visit& visit) const {
  return walk(dbi, key, MDB_SET, -1, MDB_NEXT_DUP, visit);
}

Status Txn::for_each_backward(MDB_dbi dbi, const Visit& visit) const {
  return walk(dbi, {}, MDB_LAST, -1, MDB_PREV, visit);
}

Status Txn::for_each_duplicate_backward(MDB_dbi dbi, std::string_view key, const Visit& visit) const {
  return walk(dbi, key, MDB_SET, MDB_LAST_DUP, MDB_PREV_DUP, visit);
}

Cursor::Cursor(const Txn& txn, MDB_dbi dbi) : txn_(txn) { rc_ = mdb_cursor_open(txn.get(), dbi, &cur_); }

Cursor::~Cursor() {
  if (cur_ != nullptr) mdb_cursor_close(cur_);
}

Status Cursor::status() const {
  return rc_ == 0 || rc_ == MDB_NOTFOUND ? Status::OK() : txn_.env().error(rc_, "cursor");
}

bool Cursor::move(int op) {
  if (cur_ == nullptr || (rc_ != 0 && rc_ != MDB_NOTFOUND)) return false;
  rc_ = mdb_cursor_get(cur_, &key_, &value_, MDB_cursor_op(op));
  return rc_ == 0;
}

bool Cursor::first() { return move(MDB_FIRST); }
bool Cursor::next() { return move(MDB_NEXT); }
std::string_view Cursor::key() const { return from_val(key_); }
std::string_view Cursor::value() const { return from_val(value_); }

bool Cursor::erase_and_next() {
  if (cur_ == nullptr || rc_ != 0) return false;
  rc_ = mdb_cursor_del(cur_, 0);
  if (rc_ != 0) return false;
  // After a delete the cursor sits on the next record (MDB_GET_CURRENT), or
  // past the end of its page (then MDB_NEXT).
  if (move(MDB_GET_CURRENT)) return true;
  if (rc_ != 0 && rc_ != MDB_NOTFOUND && rc_ != EINVAL) return false;
  rc_ = 0;
  return move(MDB_NEXT);
}

}  // namespace locktable::detail
