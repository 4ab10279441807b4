// Percent-encoding (RFC 3986, section 2.1), as URLs carry bytes: "%XX" is
// the byte with hex value XX. Used by file:// paths, etcd:// prefixes and
// parameters, and etcd key segments.
#pragma once

#include <string>
#include <string_view>

namespace locktable::detail {

// Decodes every "%XX" of `text` into *out; other bytes are copied as they
// are. False (and *out unspecified) when a '%' is not followed by two hex
// digits.
bool percent_decode(std::string_view text, std::string* out);

}  // namespace locktable::detail
