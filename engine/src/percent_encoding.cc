#include "percent_encoding.h"

#include "ascii.h"

namespace locktable::detail {

namespace {
constexpr unsigned hex_value(unsigned char c) {
  return ascii_digit(c) ? c - '0' : (c >= 'a' ? c - 'a' + 10 : c - 'A' + 10);
}
}  // namespace

bool percent_decode(std::string_view text, std::string* out) {
  out->clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out->push_back(text[i]);
      continue;
    }
    if (text.size() - i < 3) return false;  // "%X" or "%" at the end
    const auto hi = static_cast<unsigned char>(text[i + 1]), lo = static_cast<unsigned char>(text[i + 2]);
    if (!ascii_xdigit(hi) || !ascii_xdigit(lo)) return false;
    out->push_back(char(hex_value(hi) * 16 + hex_value(lo)));
    i += 2;
  }
  return true;
}

}  // namespace locktable::detail
