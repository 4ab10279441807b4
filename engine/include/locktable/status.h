// Status: the result of every locktable call that can fail.
//
// Like LevelDB's Status, it is a code plus a message. The message of an error
// names the file or lock concerned and the problem ("/srv/t/table: not a
// locktable file (bad magic)"), so it can be shown to an operator as is.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

namespace locktable {

enum class Code : int {
  ok = 0,
  abandoned,          // acquired, but the previous holder died holding it (success)
  timed_out,          // the deadline passed before the lock was free
  already_held,       // this thread already holds this lock (in some mode)
  not_owner,          // release by a thread that does not hold the lock
  not_found,          // no such name, table or file
  busy,               // the lock is held (remove), or the table is in exclusive use
  stale_handle,       // the name was removed (or re-created) since the handle was made
  invalid_argument,   // bad name, bad option
  corrupt,            // a file's contents are inconsistent
  version_mismatch,   // a file of another format version
  unsupported,        // network file system, other PID namespace, CPU without cmpxchg16b
  permission_denied,  // the file or folder is not accessible; etcd refused the user or a key
  capacity,           // the table (slots or reader records) is full
  io_error,           // any other system call failure
  deadlock,           // the waiter closed a cycle of waits and was picked to break it (not acquired)
  lock_lost,          // (release) the hold ended without this thread: its lease ran out (etcd)
  interrupted,        // the wait was stopped by its Deadline's WaitInterrupt (not acquired)
};

// Stable lower-case name of a code ("timed_out"), for logs and JSON.
const char* code_name(Code code);

// The Code an errno value stands for, as the library's own errors use them:
// ENOENT not_found; EACCES, EPERM, EROFS, ELOOP permission_denied; ENOSPC,
// EDQUOT, EFBIG capacity; ENOTDIR invalid_argument; anything else io_error.
Code code_for_errno(int err);

class Status {
 public:
  Status() = default;  // ok
  Status(Code code, std::string message)
      : code_(code), message_(message.empty() ? nullptr : new std::string(std::move(message))) {}
  Status(const Status& other) : code_(other.code_), message_(other.message_ ? new std::string(*other.message_) : nullptr) {}
  Status(Status&& other) noexcept = default;
  Status& operator=(const Status& other) {
    if (this != &other) *this = Status(other);
    return *this;
  }
  Status& operator=(Status&& other) noexcept = default;
  ~Status() = default;

  static Status OK() { return {}; }

  bool ok() const { return code_ == Code::ok; }
  Code code() const { return code_; }
  const std::string& message() const;

  // "code_name: message", or "ok".
  std::string to_string() const;

 private:
  // As LevelDB's Status, an ok status (the hot path) is one word and no
  // allocation: the message lives on the heap, and only when there is one.
  Code code_ = Code::ok;
  std::unique_ptr<std::string> message_;
};

// Thrown by the std::Lockable-style members of Lock (lock(), unlock(), ...),
// which have no other way to report an error.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status) : std::runtime_error(status.to_string()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

}  // namespace locktable
