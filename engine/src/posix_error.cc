#include "posix_error.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace locktable {

Code code_for_errno(int err) {
  switch (err) {
    case ENOENT:
      return Code::not_found;
    case EACCES:
    case EPERM:
    case EROFS:
    case ELOOP:
      return Code::permission_denied;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:  // past the process's file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored)
      return Code::capacity;
    case ENOTDIR:
      return Code::invalid_argument;
    default:
      return Code::io_error;
  }
}

namespace detail {

Status posix_error(std::string_view context, std::string_view what, int err) {
  return posix_error_as(code_for_errno(err), context, what, err);
}

Status posix_error_as(Code code, std::string_view context, std::string_view what, int err) {
  if (what.empty()) return Status(code, fmt::format("{}: {}", context, std::strerror(err)));
  return Status(code, fmt::format("{}: {}: {}", context, what, std::strerror(err)));
}

Status with_context(std::string_view context, const Status& s) {
  if (s.ok()) return s;
  return Status(s.code(), fmt::format("{}: {}", context, s.message()));
}

}  // namespace detail

}  // namespace locktable
