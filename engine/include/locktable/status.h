// Status: the result of every locktable call that can fail.
//
// Like LevelDB's Status, it is a code plus a message. The message of an error
// names the file or lock concerned and the problem ("/srv/t/table: not a
// locktable file (bad magic)"), so it can be shown to an operator as is.
#pragma once

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
  permission_denied,  // the file or folder is not accessible
  capacity,           // the table (slots or reader records) is full
  io_error,           // any other system call failure
};

// Stable lower-case name of a code ("timed_out"), for logs and JSON.
const char* code_name(Code code);

class Status {
 public:
  Status() = default;  // ok
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return {}; }

  bool ok() const { return code_ == Code::ok; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "code_name: message", or "ok".
  std::string to_string() const;

 private:
  Code code_ = Code::ok;
  std::string message_;
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
