// Character classes of ASCII, whatever the process's locale.
//
// <cctype>'s isalnum() and friends follow LC_CTYPE: in a Latin-1 locale
// isalnum(0xE9) is true. Anything that must read the same bytes the same way
// in every process (a lock name's etcd key, a URL's syntax) uses these.
#pragma once

namespace locktable::detail {

constexpr bool ascii_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr bool ascii_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool ascii_alnum(unsigned char c) { return ascii_digit(c) || ascii_alpha(c); }
constexpr bool ascii_xdigit(unsigned char c) { return ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

static_assert(!ascii_alnum(0xE9) && ascii_alnum('z') && !ascii_xdigit('g'));

}  // namespace locktable::detail
