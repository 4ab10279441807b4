// The JSON of etcd's KV requests (the gateway's protobuf mapping) and the
// reading of their answers, for the etcd backend's files.
#pragma once

#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "etcd_client.h"
#include "etcd_location.h"
#include "locktable/names.h"
#include "locktable/types.h"

namespace locktable::detail::etcd {

using nlohmann::json;

inline constexpr int kFormat = 1;  // of the table marker

// The end of the range of every key that starts with `prefix` (etcd's rule).
inline std::string prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = char(static_cast<unsigned char>(prefix.back()) + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

inline json range_op(const std::string& key, bool prefix = false, bool by_create = false) {
  json r{{"key", base64_encode(key)}};
  if (prefix) r["range_end"] = base64_encode(prefix_end(key));
  if (by_create) {
    r["sort_order"] = "ASCEND";
    r["sort_target"] = "CREATE";
  }
  return json{{"request_range", r}};
}

// A stored value's bytes. Strings that are not UTF-8 (a thread's comm, a host
// name) are written with U+FFFD in place of their bad bytes rather than
// refused: dump() would throw. A lock name, which must survive exactly, goes
// in as name_fields() says.
inline std::string dump_value(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// A lock name in a stored value: {"name": N} when N is UTF-8, otherwise
// {"name_segment": N as its key segment} (schema/README.md, etcd tables).
inline json name_fields(const std::string& name) {
  if (is_utf8(name)) return json{{"name", name}};
  return json{{"name", ""}, {"name_segment", encode_name_segment(name)}};
}

// The name name_fields() wrote ("" when there is none or it does not decode).
inline std::string name_of(const json& value) {
  std::string name;
  if (auto it = value.find("name_segment"); it != value.end() && it->is_string()) {
    return decode_name_segment(it->get<std::string>(), &name) ? name : std::string();
  }
  return value.value("name", "");
}

inline json put_op(const std::string& key, const json& value, int64_t lease = 0) {
  json p{{"key", base64_encode(key)}, {"value", base64_encode(dump_value(value))}};
  if (lease != 0) p["lease"] = std::to_string(lease);
  return json{{"request_put", p}};
}

inline json delete_op(const std::string& key, bool prefix = false) {
  json d{{"key", base64_encode(key)}};
  if (prefix) d["range_end"] = base64_encode(prefix_end(key));
  return json{{"request_delete_range", d}};
}

// A compare on the create revision of `key` (or of every key under it).
inline json create_is(const std::string& key, const char* result, int64_t revision, bool prefix = false) {
  json c{{"target", "CREATE"}, {"key", base64_encode(key)}, {"result", result},
         {"create_revision", std::to_string(revision)}};
  if (prefix) c["range_end"] = base64_encode(prefix_end(key));
  return c;
}

// A compare on `key`'s value: equal to `value` as dumped (false when `key`
// does not exist).
inline json value_is(const std::string& key, const json& value) {
  return json{{"target", "VALUE"}, {"key", base64_encode(key)}, {"result", "EQUAL"},
              {"value", base64_encode(dump_value(value))}};
}

// The holder marker of a lock whose last holder released it, consistent.
// Always written as this dump (nlohmann orders the keys), so that value_is
// can compare it.
inline json free_marker() { return json{{"state", "free"}, {"abandoned", false}}; }

// A compare on the revision of `key`'s last change (0: it does not exist).
inline json modified_at(const std::string& key, int64_t revision) {
  return json{{"target", "MOD"}, {"key", base64_encode(key)}, {"result", "EQUAL"},
              {"mod_revision", std::to_string(revision)}};
}

// One key of a range answer.
struct Kv {
  std::string key;
  json value;  // null when not JSON
  int64_t create = 0;
  int64_t mod = 0;
};

inline std::vector<Kv> kvs_of(const json& range) {
  std::vector<Kv> out;
  if (!range.contains("kvs")) return out;
  for (const json& kv : range["kvs"]) {
    Kv k;
    std::string raw;
    if (!base64_decode(kv.value("key", ""), &k.key)) continue;
    if (base64_decode(kv.value("value", ""), &raw) && !raw.empty()) k.value = json::parse(raw, nullptr, false);
    if (k.value.is_discarded()) k.value = nullptr;
    k.create = json_int(kv, "create_revision");
    k.mod = json_int(kv, "mod_revision");
    out.push_back(std::move(k));
  }
  return out;
}

// The i-th response of a transaction answer, as a range / put answer.
inline const json& response(const json& txn, size_t i, const char* kind) {
  static const json empty = json::object();
  if (!txn.contains("responses") || i >= txn["responses"].size()) return empty;
  const json& r = txn["responses"][i];
  return r.contains(kind) ? r[kind] : empty;
}

inline bool is_reader_key(std::string_view key) { return key.size() >= 2 && key.substr(key.size() - 2) == "_r"; }

// A queue entry of a reader: queued as one (`_r`), or a writer's key turned
// shared by a downgrade (its value says so; its place, the create revision, stays).
inline bool is_reader_entry(const Kv& kv) {
  return is_reader_key(kv.key) || (kv.value.is_object() && kv.value.value("mode", "") == "shared");
}

inline Owner owner_of(const json& v) {
  if (!v.is_object()) return {};
  return Owner{v.value("pid", 0u), v.value("tid", 0u), v.value("start", 0u)};
}

inline uint32_t current_tid() { return uint32_t(::gettid()); }


}  // namespace locktable::detail::etcd
