// Choosing a backend from a table location.
//
//   /var/lib/app/locks            the mapped-table backend (a folder)
//   file:///var/lib/app/locks     the same (file:// + absolute path)
//   <scheme>://...                the backend registered for <scheme>
//
// A location names a scheme when it starts with letters, digits, '+', '-' or
// '.' (the first a letter) followed by "://". A folder whose name merely
// contains "://" further along is a path ("./a://b" is a folder).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "backend.h"

namespace locktable::detail {

// Opens the table at `location` with a backend that understands it (the
// scheme in any case, handed on in lower case).
// Errors: unsupported (a scheme no backend handles, naming it), and whatever
// the backend's own open returns.
Status open_backend(const std::string& location, const Options& options, std::shared_ptr<Backend>* out);

// The scheme of `location` ("file", "etcd", ...), or "" when it is a path.
std::string_view location_scheme(std::string_view location);

}  // namespace locktable::detail
