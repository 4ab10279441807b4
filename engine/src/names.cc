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

}  // namespace locktable
