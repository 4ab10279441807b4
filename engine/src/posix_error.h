// Turning system-call failures into Status values, in one place (LevelDB's
// PosixError is the model), and prefixing a Status with what it concerns.
#pragma once

#include <string_view>

#include "locktable/status.h"

namespace locktable::detail {

// The Code of an errno value is locktable::code_for_errno (locktable/status.h;
// ELOOP is a symbolic link refused by O_NOFOLLOW).

// "<context>: <what>: <strerror(err)>", or "<context>: <strerror(err)>"
// when `what` is empty. Example: posix_error("/srv/t/table", "open", EACCES).
Status posix_error(std::string_view context, std::string_view what, int err);

// The same message with a code the caller chooses, where the failing call
// means something more specific than its errno (no /proc: unsupported).
Status posix_error_as(Code code, std::string_view context, std::string_view what, int err);

// The same status with "<context>: " in front of its message ("ok" stays ok).
Status with_context(std::string_view context, const Status& s);

}  // namespace locktable::detail
