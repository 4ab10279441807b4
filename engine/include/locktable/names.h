// Lock names: what a valid name is, and how messages print one.
#pragma once

#include <string>
#include <string_view>

#include "locktable/status.h"

namespace locktable {

// Checks a lock name: 1 to 255 bytes, no NUL byte. Errors: invalid_argument.
Status validate_name(std::string_view name);

// A name as every message and the tool print it, safe for a terminal and
// for a log line: printable ASCII as is, a backslash as "\\", a single quote
// as "\'", every other byte as "\xNN". A name longer than any valid one
// (255 bytes) is cut there and ends in "...".
std::string escape_name(std::string_view name);

// escape_name() in single quotes: 'orders'.
std::string quote_name(std::string_view name);

// True when `text` is well-formed UTF-8 (RFC 3629: no overlong form, no
// surrogate, nothing above U+10FFFF), as JSON needs it. A lock name need not
// be; whatever writes one into JSON or a text protocol asks this first.
bool is_utf8(std::string_view text);

}  // namespace locktable
