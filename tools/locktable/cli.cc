#include "cli.h"

#include <charconv>
#include <cstdint>
#include <ctime>
#include <string_view>

#include <fmt/format.h>

namespace cli {

using namespace locktable;

int exit_code(const Status& s) {
  switch (s.code()) {
    case Code::ok:
    case Code::abandoned:
      return kOk;
    case Code::timed_out:
    case Code::deadlock:
    case Code::interrupted:
      return kNotAcquired;
    case Code::invalid_argument:
      return kUsage;
    case Code::not_found:
      return kNotFound;
    case Code::busy:
    case Code::already_held:
      return kBusy;
    case Code::corrupt:
      return kCorrupt;
    case Code::version_mismatch:
      return kVersion;
    case Code::permission_denied:
      return kPermission;
    case Code::unsupported:
      return kUnsupported;
    case Code::capacity:
      return kCapacity;
    default:
      return kFailure;
  }
}

int fail(const Status& s) {
  fmt::print(stderr, "locktable: {}\n", s.message().empty() ? code_name(s.code()) : s.message());
  return exit_code(s);
}

Status open_table(const std::string& dir, bool create, std::unique_ptr<Table>* table, const Options& base) {
  Options o = base;
  o.create_if_missing = create;
  return Table::open(dir, o, table);
}

std::string thread_label(uint32_t pid, uint32_t tid, std::string_view comm) {
  return comm.empty() ? fmt::format("{}/{}", pid, tid) : fmt::format("{}/{} {}", pid, tid, escape_name(comm));
}

std::string human_duration_ms(uint64_t ms) {
  if (ms < 1000) return fmt::format("{}ms", ms);
  if (ms < 60'000) return fmt::format("{:.1f}s", double(ms) / 1000.0);
  if (ms < 3'600'000) return fmt::format("{}m{:02}s", ms / 60'000, ms / 1000 % 60);
  return fmt::format("{}h{:02}m", ms / 3'600'000, ms / 60'000 % 60);
}

namespace {

// n * scale, or UINT64_MAX when that does not fit.
uint64_t saturating_mul(uint64_t n, uint64_t scale) {
  uint64_t product;
  return __builtin_mul_overflow(n, scale, &product) ? UINT64_MAX : product;
}

// All of `digits` as a number (false when it is not only digits); a number
// too large for 64 bits is UINT64_MAX.
bool parse_digits(std::string_view digits, uint64_t* n) {
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos) return false;
  if (std::from_chars(digits.data(), digits.data() + digits.size(), *n).ec == std::errc::result_out_of_range) {
    *n = UINT64_MAX;
  }
  return true;
}

}  // namespace

// Times past what 64 bits of nanoseconds hold (the year 2554) are UINT64_MAX
// (after every event); a time ago longer than since 1970 is 0.
bool parse_time(const std::string& text, uint64_t* out) {
  if (text.empty()) return false;
  constexpr uint64_t kNsPerSecond = 1'000'000'000u;
  const char unit = text.back();
  const uint64_t scale = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400 : 0;
  uint64_t n = 0;
  if (scale != 0 && parse_digits(std::string_view(text).substr(0, text.size() - 1), &n)) {
    const uint64_t now = uint64_t(std::time(nullptr)) * kNsPerSecond;
    const uint64_t ago = saturating_mul(saturating_mul(n, scale), kNsPerSecond);
    *out = ago > now ? 0 : now - ago;
    return true;
  }
  if (parse_digits(text, &n)) {
    *out = saturating_mul(n, kNsPerSecond);
    return true;
  }
  std::tm tm{};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) rest = strptime(text.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  if (rest == nullptr) {
    rest = strptime(text.c_str(), "%Y-%m-%d", &tm);
    if (rest == nullptr || *rest != '\0') return false;
  }
  uint64_t frac_ns = 0;
  if (*rest == '.') {
    ++rest;
    uint64_t scale_ns = 100'000'000;
    while (*rest >= '0' && *rest <= '9') {
      frac_ns += uint64_t(*rest - '0') * scale_ns;
      scale_ns /= 10;
      ++rest;
    }
  }
  if (*rest == 'Z') ++rest;
  if (*rest != '\0') return false;
  time_t secs = timegm(&tm);
  if (secs < 0) return false;
  const uint64_t whole = saturating_mul(uint64_t(secs), kNsPerSecond);
  *out = whole > UINT64_MAX - frac_ns ? UINT64_MAX : whole + frac_ns;
  return true;
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    fmt::print("{}\n", out);
  };
  line(header);
  for (const auto& r : rows) line(r);
}

}  // namespace cli
