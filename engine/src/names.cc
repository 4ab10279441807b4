#include "locktable/names.h"

#include <fmt/format.h>

namespace locktable {

namespace {
constexpr size_t kMaxNameBytes = 255;
}

Status validate_name(std::string_view name) {
  if (name.empty()) return Status(Code::invalid_argument, "lock name is empty");
  if (name.size() > kMaxNameBytes) {
    return Status(Code::invalid_argument,
                  fmt::format("lock name is {} bytes long; the limit is {}", name.size(), kMaxNameBytes));
  }
  if (name.find('\0') != std::string_view::npos) {
    return Status(Code::invalid_argument, "lock name contains a NUL byte");
  }
  return Status::OK();
}

std::string escape_name(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  for (unsigned char c : name.substr(0, kMaxNameBytes)) {
    if (c == '\\' || c == '\'') {
      out += '\\';
      out += char(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (name.size() > kMaxNameBytes) out += "...";
  return out;
}

std::string quote_name(std::string_view name) {
  // (Not "'" + escape_name(name) + "'": GCC 12 warns -Wrestrict on it at -O3, wrongly.)
  std::string out = escape_name(name);
  out.insert(out.begin(), '\'');
  out.push_back('\'');
  return out;
}

bool is_utf8(std::string_view text) {
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    // The lead byte fixes the length and the range the first continuation
    // byte may take (that range is what rules out overlong forms,
    // surrogates and code points above U+10FFFF).
    size_t length;
    unsigned char low = 0x80, high = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      length = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3;
      if (c == 0xe0) low = 0xa0;
      if (c == 0xed) high = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4;
      if (c == 0xf0) low = 0x90;
      if (c == 0xf4) high = 0x8f;
    } else {
      return false;
    }
    if (n - i < length) return false;
    const auto first = static_cast<unsigned char>(text[i + 1]);
    if (first < low || first > high) return false;
    for (size_t k = 2; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if (next < 0x80 || next > 0xbf) return false;
    }
    i += length;
  }
  return true;
}

}  // namespace locktable
