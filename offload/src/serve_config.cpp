#include "offload/serve_config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "opu_sim/value_range.h"

namespace opu::offload {
namespace {

std::string trim(std::string text) {
  const auto not_space = [](unsigned char c) { return std::isspace(c) == 0; };
  text.erase(text.begin(), std::find_if(text.begin(), text.end(), not_space));
  text.erase(std::find_if(text.rbegin(), text.rend(), not_space).base(), text.end());
  return text;
}

// The accepted ranges of the server's numbers. A message of at least 4 KiB; below 2 GiB, gRPC's
// limit. At most a day for the periods: longer waits overflow the clocks' durations.
const ValueRange kMaxMessageMbRange = ValueRange::closed(0.004, 2047, "MiB");
const ValueRange kMaxInflightRange = ValueRange::integers(1, 1000000);
const ValueRange kSecondsRange = ValueRange::closed(0, 86400, "seconds");

// "max_inflight (--max-inflight)": the name as JSON files and --param write it, and as a flag.
std::string shown(const std::string& name) {
  std::string flag = name;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return name + " (--" + flag + ")";
}

// The server's own settings: one table for flags, --param and JSON config files, with the range
// of every value (a value out of range is refused, never clamped or replaced).
struct ServeParam {
  std::string name;
  std::string description;
  std::function<Status(ServeConfig&, const std::string&)> set;  // errors without the name
};

ServeParam text_param(std::string name, std::string description, std::string ServeConfig::*member) {
  return {std::move(name), std::move(description),
          [member](ServeConfig& c, const std::string& v) -> Status {
            c.*member = v;
            return {};
          }};
}

template <typename T>
ServeParam number_param(std::string name, std::string description, T ServeConfig::*member,
                        ValueRange range) {
  description += " [" + range.expected() + "]";
  return {std::move(name), std::move(description),
          [member, range](ServeConfig& c, const std::string& v) -> Status {
            Result<T> value = parse_in_range<T>(v, range);
            if (!value.ok()) return value.status();
            c.*member = *value;
            return {};
          }};
}

ServeParam bool_param(std::string name, std::string description, bool ServeConfig::*member) {
  return {std::move(name), std::move(description),
          [member](ServeConfig& c, const std::string& v) -> Status {
            if (v == "true" || v == "1" || v == "yes" || v == "on") {
              c.*member = true;
            } else if (v == "false" || v == "0" || v == "no" || v == "off") {
              c.*member = false;
            } else {
              return invalid_argument(
                  not_one_of_text(v, {"true", "false", "1", "0", "yes", "no", "on", "off"}));
            }
            return {};
          }};
}

ServeParam choice_param(std::string name, std::string description, std::string ServeConfig::*member,
                        std::vector<std::string> choices) {
  return {std::move(name), std::move(description),
          [member, choices](ServeConfig& c, const std::string& v) -> Status {
            if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
              return invalid_argument(not_one_of_text(v, choices));
            }
            c.*member = v;
            return {};
          }};
}

const std::vector<ServeParam>& serve_params() {
  static const std::vector<ServeParam> kParams = {
      text_param("listen", "HOST:PORT to listen on; port 0 picks a free one (default 127.0.0.1:0)",
                 &ServeConfig::listen),
      text_param("tls_cert", "PEM certificate chain file: serve TLS (needs tls_key)",
                 &ServeConfig::tls_cert_file),
      text_param("tls_key", "PEM private key file of tls_cert", &ServeConfig::tls_key_file),
      text_param("token_file", "file holding the bearer token clients must send (default: none)",
                 &ServeConfig::token_file),
      number_param("max_message_mb", "largest message received or sent, MiB (default 64)",
                   &ServeConfig::max_message_mb, kMaxMessageMbRange),
      number_param("max_inflight",
                   "requests served at once; more get RESOURCE_EXHAUSTED (default 64)",
                   &ServeConfig::max_inflight, kMaxInflightRange),
      bool_param("serve_linear",
                 "serve LinearTransform (false: UNIMPLEMENTED, frames only) (default true)",
                 &ServeConfig::serve_linear),
      choice_param("log_level", "trace, debug, info, warn, error or off (default info)",
                   &ServeConfig::log_level, {"trace", "debug", "info", "warn", "error", "off"}),
      number_param("summary_interval_s",
                   "period of the info-level summary, seconds; 0 = at exit (default 10)",
                   &ServeConfig::summary_interval_s, kSecondsRange),
      number_param("shutdown_grace_s",
                   "time in-flight calls get on SIGINT/SIGTERM, seconds (default 30)",
                   &ServeConfig::shutdown_grace_s, kSecondsRange),
      text_param("calibration",
                 "calibration file (opu-calibrate ... --out FILE): its exposure becomes the "
                 "default exposure, its masked pixels project to 0 in LinearTransform (default: "
                 "none)",
                 &ServeConfig::calibration_file),
  };
  return kParams;
}

}  // namespace

std::string normalize_param_name(std::string_view name) {
  std::string out(name);
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

std::vector<std::pair<std::string, std::string>> describe_serve_params() {
  std::vector<std::pair<std::string, std::string>> described;
  for (const ServeParam& p : serve_params()) described.emplace_back(p.name, p.description);
  return described;
}

Status apply_serve_params(const std::map<std::string, std::string>& params, ServeConfig& config) {
  for (const auto& [raw_name, value] : params) {
    const std::string name = normalize_param_name(raw_name);
    const auto& table = serve_params();
    const auto param = std::find_if(table.begin(), table.end(),
                                    [&](const ServeParam& p) { return p.name == name; });
    if (param == table.end()) {
      config.sim_params[name] = value;  // checked by SimConfig::from_params()
      continue;
    }
    OPU_RETURN_IF_ERROR(param->set(config, value).with_context(shown(name)));
  }
  return {};
}

Result<std::string> read_text_file(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(std::string(what) + " '" + path + "' cannot be opened");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return data_loss(std::string(what) + " '" + path + "' cannot be read");
  return text.str();
}

Result<std::map<std::string, std::string>> read_json_params(const std::string& path) {
  Result<std::string> text = read_text_file(path, "config file");
  if (!text.ok()) return text.status();
  return parse_json_params(*text, path);
}

Result<std::map<std::string, std::string>> parse_json_params(std::string_view text,
                                                             const std::string& path) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return invalid_argument("config file '" + path + "' is not valid JSON");
  }
  if (!json.is_object()) {
    return invalid_argument("config file '" + path + "' is not a JSON object of name: value");
  }
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : json.items()) {
    std::string shown_value;
    if (value.is_string()) {
      shown_value = value.get<std::string>();
    } else if (value.is_boolean()) {
      shown_value = value.get<bool>() ? "true" : "false";
    } else if (value.is_number_integer() || value.is_number_unsigned()) {
      shown_value = value.dump();
    } else if (value.is_number_float()) {
      std::ostringstream number;
      number.precision(17);
      number << value.get<double>();
      shown_value = number.str();
    } else {
      return invalid_argument("config file '" + path + "': '" + name +
                              "' must be a string, number or boolean, got " + value.type_name());
    }
    // "n-in" and "n_in" name one parameter: two values for it would replace one silently.
    if (!out.emplace(normalize_param_name(name), shown_value).second) {
      return invalid_argument("config file '" + path + "': '" + name + "' is given twice (as " +
                              normalize_param_name(name) + " with dashes and underscores)");
    }
  }
  return out;
}

Result<ServerOptions> ServeConfig::server_options() const {
  ServerOptions options;
  options.listen = listen;
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return invalid_argument("TLS needs both --tls-cert and --tls-key");
  }
  if (!tls_cert_file.empty()) {
    Result<std::string> cert = read_text_file(tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    Result<std::string> key = read_text_file(tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    options.tls_cert_pem = *cert;
    options.tls_key_pem = *key;
  }
  if (!token_file.empty()) {
    Result<std::string> token = read_text_file(token_file, "token file");
    if (!token.ok()) return token.status();
    options.token = trim(*token);
    if (options.token.empty()) {
      return invalid_argument("--token-file: token file '" + token_file + "' is empty");
    }
  }
  options.max_message_bytes = static_cast<std::int64_t>(max_message_mb * 1024.0 * 1024.0);
  options.max_inflight = max_inflight;
  options.serve_linear = serve_linear;
  return options;
}

}  // namespace opu::offload
