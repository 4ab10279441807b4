// Backend: the seam between the public Table/Lock API and an engine that keeps
// the locks.
//
//   Table::open(location)  --registry (backend_registry.h)-->  Backend
//   Table, Lock, the tool  --every operation------------------>  Backend
//
// A location without a scheme, or with file://, opens the mapped-table backend
// (engine/src/local/). Other schemes come from the registry; an unknown one is
// `unsupported`, naming it.
//
// The hot path does not pay for the seam. A Lock records which kind of backend
// made it (BackendKind) and the backend's per-lock state; Lock::acquire and
// Lock::release test the kind (one predictable branch) and, for the local
// backend, run its inline uncontended paths on the cached slot pointer (no
// virtual call, no allocation). Everything else goes through this interface.
//
// Every call may be made from any thread of the process that opened the
// backend; a backend says itself what it refuses in a child after fork(),
// with used_after_fork() (below).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "locktable/lock.h"
#include "locktable/status.h"
#include "locktable/table.h"
#include "locktable/types.h"

namespace locktable::detail {

// What a backend opened by process `opener` answers a call it refuses in a
// child after fork(), alike on every backend: unsupported, naming the
// location and both processes.
Status used_after_fork(const std::string& location, int opener);

enum class BackendKind : uint8_t {
  none = 0,   // an empty Lock
  local = 1,  // the mapped table (engine/src/local/)
  other = 2,  // any backend reached only through this interface
};

// Called once per lock by Backend::list_each; a non-ok status stops the listing
// and is returned.
using LockVisitor = std::function<Status(const LockInfo&)>;

class Backend {
 public:
  explicit Backend(BackendKind kind) : kind_(kind) {}
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  BackendKind kind() const { return kind_; }
  // The location as the caller gave it, for messages and Table::dir().
  virtual const std::string& location() const = 0;

  // --- names ---
  // Fills *out (a handle that keeps `self` alive). Errors: invalid_argument,
  // not_found (Lookup::existing), capacity.
  virtual Status lookup(const std::shared_ptr<Backend>& self, std::string_view name, Lookup mode, Lock* out) = 0;
  // The same for many names: (*out)[i] is the handle of names[i].
  virtual Status lookup_many(const std::shared_ptr<Backend>& self, const std::vector<std::string>& names,
                             Lookup mode, std::vector<Lock>* out) = 0;
  virtual Status remove(std::string_view name) = 0;

  // --- locks (on the local backend: what the inline paths did not finish) ---
  virtual AcquireResult acquire(Lock& lock, Mode mode, const Deadline& deadline) = 0;
  virtual Status release(Lock& lock, Mode mode) = 0;
  // Whether the calling thread holds `lock` abandoned and has not yet marked it consistent.
  virtual bool holds_abandoned(const Lock& lock) = 0;
  virtual Status mark_consistent(Lock& lock) = 0;
  // Exclusive to shared, atomically (Lock::downgrade).
  virtual Status downgrade(Lock& lock) = 0;
  // The fencing token of the calling thread's hold of `lock`, 0 if not held.
  virtual uint64_t token(const Lock& lock) = 0;

  // --- inspection and maintenance ---
  virtual Status list_each(const LockVisitor& visit, ListScope scope, std::string_view prefix) = 0;
  virtual Status stats(TableStats* stats) = 0;
  virtual Status recover(bool dry_run, std::vector<Recovery>* actions) = 0;
  virtual Status check(std::vector<std::string>* problems) = 0;

  // --- history ---
  virtual Status drain_history(uint64_t* drained) = 0;
  virtual Status history(const HistoryQuery& query, std::vector<Event>* events) = 0;
  virtual Status set_history_level(HistoryLevel level) = 0;
  virtual Status set_retention(uint64_t count, std::chrono::seconds age) = 0;

 private:
  const BackendKind kind_;
};

// What a backend reads and writes inside a Lock handle (Lock's private
// members; Lock befriends this struct and nothing else).
struct LockAccess {
  struct Fields {
    std::shared_ptr<Backend> backend;
    void* state = nullptr;                     // the backend's per-lock state (local: format::Slot*)
    const void* hot = nullptr;                 // local: the table's LocalHot (local/hot_path.h)
    uint32_t index = 0;                        // local: slot index
    uint32_t incarnation = 0;                  // local: slot incarnation
    std::string name;
  };
  static void fill(Lock* lock, Fields fields) {
    lock->kind_ = uint8_t(fields.backend ? fields.backend->kind() : BackendKind::none);
    lock->backend_ = std::move(fields.backend);
    lock->state_ = fields.state;
    lock->hot_ = fields.hot;
    lock->index_ = fields.index;
    lock->incarnation_ = fields.incarnation;
    lock->name_ = std::move(fields.name);
  }
  static BackendKind kind(const Lock& l) { return BackendKind(l.kind_); }
  static void* state(const Lock& l) { return l.state_; }
  static const void* hot(const Lock& l) { return l.hot_; }
  static uint32_t index(const Lock& l) { return l.index_; }
  static uint32_t incarnation(const Lock& l) { return l.incarnation_; }
  static Backend* backend(const Lock& l) { return l.backend_.get(); }
};

}  // namespace locktable::detail
