// Fuzz target: calibration files (calibration/src/calibration_file.cpp), as opu-calibrate,
// opu-serve --calibration and opu-train --calibration read them.
//
// Input: the content of a calibration file. parse_calibration(); when accepted, device_settings()
// and check_device_settings() against a device (what opu-serve and opu-train do with it), and the
// round trip: format_calibration() of the parsed file parses again, to the same text.
// Properties: no crash, leak or undefined behaviour; whatever is accepted can be written back and
// read again unchanged; the settings' masked pixels are sorted and distinct.
#include <algorithm>
#include <cstdint>
#include <string>

#include "calibration/calibration_file.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using opu::calibration::CalibrationFile;
  opu::Result<CalibrationFile> file =
      opu::calibration::parse_calibration(opu::fuzz::as_text(data, size), "fuzz.json");
  if (!file.ok()) return 0;
  const opu::calibration::DeviceSettings settings = opu::calibration::device_settings(*file);
  OPU_FUZZ_CHECK(std::adjacent_find(settings.masked_pixels.begin(), settings.masked_pixels.end(),
                                    [](std::int64_t a, std::int64_t b) { return a >= b; }) ==
                     settings.masked_pixels.end(),
                 "masked pixels not sorted and distinct");
  const opu::calibration::DeviceLimits device{1024, 1024, 100000.0};
  (void)opu::calibration::check_device_settings(settings, device, "fuzz.json");
  const std::string text = opu::calibration::format_calibration(*file);
  opu::Result<CalibrationFile> again = opu::calibration::parse_calibration(text, "written");
  OPU_FUZZ_CHECK(again.ok(), "written back, then refused: " + again.status().to_string());
  OPU_FUZZ_CHECK(opu::calibration::format_calibration(*again) == text,
                 "written back, read, written again: the text changed");
  return 0;
}
