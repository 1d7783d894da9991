# opu::calibration_file: the versioned calibration file format alone (load, validate, save,
# device_settings()). opu-calibrate writes it; opu-serve and opu-train read it. It is its own
# target because calibration/ depends on offload/ (opu-calibrate opens devices through
# open_device()): opu-serve linking all of opu::calibration would make the dependency run both
# ways. Depends on opu::sim (Status) and nlohmann_json only, never on gRPC. Included from the
# top-level CMakeLists.txt right after opu_sim, so it exists whichever modules are switched on.
add_library(opu_calibration_file ${CMAKE_CURRENT_LIST_DIR}/src/calibration_file.cpp)
add_library(opu::calibration_file ALIAS opu_calibration_file)
target_include_directories(opu_calibration_file PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
target_link_libraries(opu_calibration_file PUBLIC opu::sim
                      PRIVATE opu_warnings nlohmann_json::nlohmann_json)
