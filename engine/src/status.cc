#include "locktable/status.h"

namespace locktable {

const char* code_name(Code code) {
  switch (code) {
    case Code::ok: return "ok";
    case Code::abandoned: return "abandoned";
    case Code::timed_out: return "timed_out";
    case Code::already_held: return "already_held";
    case Code::not_owner: return "not_owner";
    case Code::not_found: return "not_found";
    case Code::busy: return "busy";
    case Code::stale_handle: return "stale_handle";
    case Code::invalid_argument: return "invalid_argument";
    case Code::corrupt: return "corrupt";
    case Code::version_mismatch: return "version_mismatch";
    case Code::unsupported: return "unsupported";
    case Code::permission_denied: return "permission_denied";
    case Code::capacity: return "capacity";
    case Code::io_error: return "io_error";
    case Code::deadlock: return "deadlock";
    case Code::lock_lost: return "lock_lost";
    case Code::interrupted: return "interrupted";
  }
  return "unknown";
}

const std::string& Status::message() const {
  static const std::string empty;
  return message_ ? *message_ : empty;
}

std::string Status::to_string() const {
  if (!message_) return code_name(code_);
  return std::string(code_name(code_)) + ": " + *message_;
}

}  // namespace locktable
