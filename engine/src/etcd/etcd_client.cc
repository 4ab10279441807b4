#include "etcd_client.h"

#include <curl/curl.h>

#include <array>
#include <mutex>

#include <fmt/format.h>

namespace locktable::detail {

using nlohmann::json;

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t append_body(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

void EtcdClient::prepare_post(void* handle, const std::string& url, const std::string& payload, WriteFn write,
                              void* data, std::chrono::milliseconds timeout) const {
  // No "Expect: 100-continue" (curl adds it to bodies over 1 KiB): it costs a
  // round trip per call.
  static curl_slist* const headers =
      curl_slist_append(curl_slist_append(nullptr, "Expect:"), "Content-Type: application/json");
  CURL* curl = static_cast<CURL*>(handle);
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, long(payload.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, data);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, long(connect_timeout_.count()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, long(timeout.count()));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM in a library
  curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (size_t left = in.size() - i; left > 0) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (left == 2) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(left == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

bool base64_decode(std::string_view in, std::string* out) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (int i = 0; i < 64; ++i) t[uint8_t(kAlphabet[i])] = int8_t(i);
    return t;
  }();
  out->clear();
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      if (pad > 0 || table[uint8_t(c)] < 0) return false;
      v = (v << 6) | uint32_t(table[uint8_t(c)]);
    }
    out->push_back(char(v >> 16));
    if (pad < 2) out->push_back(char((v >> 8) & 0xff));
    if (pad < 1) out->push_back(char(v & 0xff));
  }
  return true;
}

int64_t json_int(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

EtcdClient::EtcdClient(std::string location, std::vector<std::string> endpoints,
                       std::chrono::milliseconds connect_timeout)
    : location_(std::move(location)), endpoints_(std::move(endpoints)), connect_timeout_(connect_timeout) {
  global_init();
}

EtcdClient::~EtcdClient() {
  for (void* h : pool_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* EtcdClient::take_handle() {
  {
    std::lock_guard<std::mutex> guard(mu_);
    if (!pool_.empty()) {
      void* h = pool_.back();
      pool_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void EtcdClient::give_handle(void* h) {
  std::lock_guard<std::mutex> guard(mu_);
  pool_.push_back(h);
}

Status EtcdClient::call(std::string_view path, const json& body, json* out, std::chrono::milliseconds timeout) {
  CURL* curl = static_cast<CURL*>(take_handle());
  if (curl == nullptr) return Status(Code::io_error, fmt::format("{}: cannot make an HTTP handle", location_));
  const std::string payload = body.dump();
  size_t first;
  {
    std::lock_guard<std::mutex> guard(mu_);
    first = preferred_;
  }
  std::string errors;
  for (size_t attempt = 0; attempt < endpoints_.size(); ++attempt) {
    const size_t e = (first + attempt) % endpoints_.size();
    const std::string url = fmt::format("http://{}/v3/{}", endpoints_[e], path);
    std::string response;
    prepare_post(curl, url, payload, append_body, &response, timeout);
    const CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
      errors += fmt::format("{}{}: {}", errors.empty() ? "" : "; ", endpoints_[e], curl_easy_strerror(rc));
      continue;
    }
    long http = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
    give_handle(curl);
    {
      std::lock_guard<std::mutex> guard(mu_);
      preferred_ = e;
    }
    json parsed = json::parse(response, nullptr, false);
    if (parsed.is_discarded()) {
      return Status(Code::corrupt, fmt::format("{}: {} answered {} with something that is not JSON", location_,
                                               endpoints_[e], path));
    }
    if (http != 200) {
      std::string message = parsed.is_object() && parsed.contains("message") && parsed["message"].is_string()
                                ? parsed["message"].get<std::string>()
                                : parsed.dump();
      // etcd's space quota used up (gRPC's RESOURCE_EXHAUSTED, 8, which etcd
      // also answers when overloaded: "too many requests", a transient
      // io_error): it then takes only reads and deletions until an operator
      // frees space.
      const bool full = parsed.is_object() && parsed.value("code", 0) == 8 &&
                        message.find("database space exceeded") != std::string::npos;
      return Status(full ? Code::capacity : Code::io_error,
                    fmt::format("{}: etcd at {} refused {}: {}", location_, endpoints_[e], path, message));
    }
    *out = std::move(parsed);
    return Status::OK();
  }
  curl_easy_cleanup(curl);
  return Status(Code::io_error, fmt::format("{}: etcd unreachable ({})", location_, errors));
}

namespace {

// The watch stream's reader: one JSON object per line.
struct WatchStream {
  std::string pending;
  bool deleted = false;
  bool failed = false;
};

size_t read_watch(char* data, size_t size, size_t n, void* out) {
  auto* w = static_cast<WatchStream*>(out);
  w->pending.append(data, size * n);
  for (size_t eol; (eol = w->pending.find('\n')) != std::string::npos;) {
    const json message = json::parse(w->pending.substr(0, eol), nullptr, false);
    w->pending.erase(0, eol + 1);
    const json result = message.is_object() ? message.value("result", json()) : json();
    if (!result.is_object() || result.value("canceled", false)) {
      w->failed = true;
      return 0;  // stops the transfer
    }
    for (const json& e : result.value("events", json::array())) {
      if (e.value("type", "") == "DELETE") {
        w->deleted = true;
        return 0;
      }
    }
  }
  return size * n;
}

}  // namespace

Status EtcdClient::watch_for_delete(const std::string& key, const std::string& range_end, int64_t after,
                                    std::chrono::milliseconds timeout, bool* deleted) {
  *deleted = false;
  CURL* curl = static_cast<CURL*>(take_handle());
  if (curl == nullptr) return Status(Code::io_error, fmt::format("{}: cannot make an HTTP handle", location_));
  const std::string payload =
      json{{"create_request", {{"key", key}, {"range_end", range_end}, {"start_revision", std::to_string(after + 1)}}}}
          .dump();
  size_t e;
  {
    std::lock_guard<std::mutex> guard(mu_);
    e = preferred_;
  }
  const std::string url = fmt::format("http://{}/v3/watch", endpoints_[e]);
  WatchStream stream;
  prepare_post(curl, url, payload, read_watch, &stream, std::max(timeout, std::chrono::milliseconds(1)));
  const CURLcode rc = curl_easy_perform(curl);
  give_handle(curl);  // an ended stream closed its connection: the handle opens another
  if (stream.deleted) {
    *deleted = true;
    return Status::OK();
  }
  if ((rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_OK) && !stream.failed) return Status::OK();  // nothing left
  return Status(Code::io_error, fmt::format("{}: watch on {} failed: {}", location_, endpoints_[e],
                                            stream.failed ? "etcd ended it" : curl_easy_strerror(rc)));
}

}  // namespace locktable::detail
