// Lock: a handle to one named lock of a Table.
//
// Ownership is per thread, as with pthread and Windows mutexes: the thread that
// acquires must be the thread that releases. A handle is cheap to copy and may
// be shared by any number of threads of the process; it caches the lock's slot,
// so acquiring through it touches only the mapped table, never LMDB.
//
// Two ways to use it:
//
//  * The explicit calls, acquire() and release(), return a status:
//      ok            acquired
//      abandoned     acquired, but the previous holder died holding it; the
//                    data it protected may be half-written. Repair it, then
//                    call mark_consistent(). Until then every later acquirer is
//                    told "abandoned" too: abandonment is never swallowed.
//      timed_out     the deadline passed
//      already_held  this thread holds it already (no silent recursion)
//      stale_handle  the name was removed since this handle was made
//      not_owner     (release) this thread does not hold it
//    and, more rarely (each call below lists its own):
//      deadlock      (acquire) not acquired: this waiter closed a cycle of
//                    waits and was picked to break it (Options::deadlock_timeout)
//      interrupted   (acquire) not acquired: the deadline's WaitInterrupt
//                    (Deadline::interruptible_by) stopped the wait
//      capacity      (shared acquire) no free reader record; (etcd) the
//                    cluster's space quota is used up
//      lock_lost     (etcd release) the hold ended without this thread: its
//                    lease ran out, so another process may have taken the lock
//      invalid_argument  an empty handle
//      unsupported   (etcd) a handle of the parent used in a forked child
//      io_error, permission_denied  (etcd) the cluster is unreachable or
//                    refuses the user; the message names the endpoints
//
//  * The standard Lockable, TimedLockable, SharedLockable and
//    SharedTimedLockable members, so std::unique_lock, std::scoped_lock and
//    std::shared_lock work. They throw locktable::Error on errors. An abandoned
//    lock is acquired normally; abandoned() then returns true for the holding
//    thread, and the abandonment carries on to the next holder unless
//    mark_consistent() is called.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "locktable/status.h"
#include "locktable/types.h"

namespace locktable {

namespace detail {
class Backend;
struct LockAccess;
}  // namespace detail

class Lock {
 public:
  Lock() = default;  // an empty handle; every call fails with invalid_argument

  bool valid() const { return backend_ != nullptr; }
  const std::string& name() const { return name_; }
  uint32_t slot() const { return index_; }

  // Acquire in `mode`, waiting at most until `deadline`. Errors: timed_out,
  // interrupted, already_held, stale_handle, deadlock, capacity,
  // invalid_argument (and the etcd ones above); ok and abandoned are held
  // (AcquireResult::held()).
  AcquireResult acquire(Mode mode = Mode::exclusive, Deadline deadline = Deadline::never()) {
    return mode == Mode::exclusive ? acquire_exclusive(deadline) : acquire_shared(deadline);
  }
  AcquireResult try_acquire(Mode mode = Mode::exclusive) { return acquire(mode, Deadline::now()); }

  // Release a lock this thread holds in `mode`. Errors: not_owner (not held
  // by this thread, or not in `mode`), stale_handle, lock_lost (etcd: the
  // hold is over all the same), invalid_argument.
  Status release(Mode mode = Mode::exclusive) { return mode == Mode::exclusive ? release_exclusive() : release_shared(); }

  // True when the calling thread holds this lock and got it abandoned, and has
  // not yet called mark_consistent().
  bool abandoned() const;

  // Declare that the calling thread (the holder) has repaired what a dead
  // holder left half-done: the lock stops reporting "abandoned". Errors:
  // not_owner (this thread does not hold it), invalid_argument.
  Status mark_consistent();

  // The fencing token of the calling thread's hold (AcquireResult::token),
  // or 0 when it does not hold the lock, or may not any more (etcd: its
  // lease unrenewed for the TTL, so another process may hold it; release()
  // then says whether it was lost).
  uint64_t token() const;

  // Turns the calling thread's exclusive hold into a shared one, atomically:
  // no writer can take the lock in between; readers waiting get in. The token
  // stays; a hold taken abandoned and not yet marked consistent stays
  // abandoned (for the readers now). Release it with release(Mode::shared).
  // Errors: not_owner (not held exclusive by this thread), stale_handle,
  // capacity (no reader record), unsupported (a backend without it).
  Status downgrade();

  // Lockable / TimedLockable.
  void lock();
  bool try_lock();
  void unlock();
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return timed(Mode::exclusive, Deadline::after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return timed(Mode::exclusive, Deadline::until(t));
  }

  // SharedLockable / SharedTimedLockable.
  void lock_shared();
  bool try_lock_shared();
  void unlock_shared();
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& d) {
    return timed(Mode::shared, Deadline::after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t) {
    return timed(Mode::shared, Deadline::until(t));
  }

 private:
  friend struct detail::LockAccess;  // how a backend fills and reads a handle

  bool timed(Mode mode, Deadline deadline);
  // acquire() and release() of each mode: the mode is known where they are
  // called, so each mode's uncontended path is a function of its own.
  AcquireResult acquire_exclusive(Deadline deadline);
  AcquireResult acquire_shared(Deadline deadline);
  Status release_exclusive();
  Status release_shared();

  std::shared_ptr<detail::Backend> backend_;  // keeps the table open
  void* state_ = nullptr;                     // the backend's per-lock state (mapped table: the slot)
  const void* hot_ = nullptr;                 // what the backend's inline paths need of the table
  uint32_t index_ = 0;
  uint32_t incarnation_ = 0;
  uint8_t kind_ = 0;                          // which backend made it (tested on the hot path)
  std::string name_;
};

}  // namespace locktable
