// The ledger of a sweep: one JSON line per finished run, appended and flushed as soon as the run
// ends, keyed by (point, seed). A killed sweep restarts from it and skips what it holds; the final
// files are always rebuilt from it in canonical order, so they do not depend on how often the
// sweep was interrupted or in which order workers finished.
//
// Thread-safe: append() may be called from every worker.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "opu_sim/status.h"

namespace opu::trainer::study {

/// "adc_bits=4#seed=2": a run's identity in the ledger.
std::string run_key(const std::string& point_key, std::uint64_t seed);

class Ledger {
 public:
  /// Reads `path` if it exists, keeping the records made with `fingerprint` (the last one per
  /// run wins); a torn last line (a kill during the write) is skipped. Opens it for appending.
  static Result<std::unique_ptr<Ledger>> open(const std::string& path,
                                              const std::string& fingerprint);

  /// Records by run_key(). Not to be called while workers append.
  const std::map<std::string, nlohmann::json>& records() const { return records_; }
  /// Writes one record (with its "key") as a line and flushes it.
  Status append(const nlohmann::json& record);

 private:
  Ledger(std::string path, std::string fingerprint)
      : path_(std::move(path)), fingerprint_(std::move(fingerprint)) {}
  Status load();

  std::string path_;
  std::string fingerprint_;
  std::map<std::string, nlohmann::json> records_;
  std::mutex mutex_;  // guards out_ and records_ during the sweep
  std::ofstream out_;
};

}  // namespace opu::trainer::study
