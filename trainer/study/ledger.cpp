#include "ledger.h"

#include <memory>

#include "log.h"

namespace opu::trainer::study {

std::string run_key(const std::string& point_key, std::uint64_t seed) {
  return point_key + "#seed=" + std::to_string(seed);
}

Result<std::unique_ptr<Ledger>> Ledger::open(const std::string& path,
                                             const std::string& fingerprint) {
  std::unique_ptr<Ledger> ledger(new Ledger(path, fingerprint));
  OPU_RETURN_IF_ERROR(ledger->load());
  ledger->out_.open(path, std::ios::app);
  if (!ledger->out_) return failed_precondition("ledger " + path + ": cannot open for appending");
  return ledger;
}

Status Ledger::load() {
  std::ifstream in(path_);
  if (!in) return {};  // a new sweep
  std::string line;
  std::int64_t number = 0;
  std::int64_t other_settings = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object() || !record.contains("key")) {
      study_logger()->warn("ledger {}:{}: not a complete record (torn write?), ignored", path_,
                           number);
      continue;
    }
    if (record.value("fingerprint", "") != fingerprint_) {
      ++other_settings;
      continue;
    }
    std::string key = record.at("key").get<std::string>();
    records_[std::move(key)] = std::move(record);
  }
  if (other_settings > 0) {
    study_logger()->warn(
        "ledger {}: {} records made with other training or device settings are not reused", path_,
        other_settings);
  }
  // A torn last line has no newline: start the next record on a line of its own.
  if (number > 0) {
    std::ifstream tail(path_, std::ios::binary | std::ios::ate);
    if (tail.tellg() > 0) {
      tail.seekg(-1, std::ios::end);
      if (tail.get() != '\n') std::ofstream(path_, std::ios::app) << "\n";
    }
  }
  return {};
}

Status Ledger::append(const nlohmann::json& record) {
  const std::lock_guard<std::mutex> lock(mutex_);
  out_ << record.dump() << "\n" << std::flush;
  if (!out_) return data_loss("ledger " + path_ + ": write failed");
  records_[record.at("key").get<std::string>()] = record;
  return {};
}

}  // namespace opu::trainer::study
