# Project-wide compile settings as INTERFACE targets (no directory-wide flags).

# opu_warnings: every first-party target links it privately.
add_library(opu_warnings INTERFACE)
target_compile_options(opu_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                              -Wold-style-cast -Wcast-align)
if(OPU_WERROR)
  target_compile_options(opu_warnings INTERFACE -Werror)
endif()
# Reproducibility: no contraction of a*b+c into FMA unless written explicitly, never -ffast-math.
# The transmission matrix is pinned by a golden hash; its bits must not depend on the instruction set.
target_compile_options(opu_warnings INTERFACE -ffp-contract=off -fno-fast-math)
if(OPU_ARCH)
  target_compile_options(opu_warnings INTERFACE -march=${OPU_ARCH})
endif()
# GCC 12 reports its own AVX-512 intrinsics as "maybe uninitialized" once Eigen inlines them (a false
# positive, GCC bug 105593): the force-included header silences it inside <immintrin.h> only.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(opu_warnings INTERFACE
                         "SHELL:-include ${PROJECT_SOURCE_DIR}/cmake/gcc12-avx512-pr105593.h")
endif()
if(OPU_SANITIZE)
  target_compile_options(opu_warnings INTERFACE -fsanitize=${OPU_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(opu_warnings INTERFACE -fsanitize=${OPU_SANITIZE})
  if(OPU_SANITIZE MATCHES "undefined")
    # A report of undefined behaviour fails the test that caused it instead of scrolling past.
    target_compile_options(opu_warnings INTERFACE -fno-sanitize-recover=undefined)
    target_link_options(opu_warnings INTERFACE -fno-sanitize-recover=undefined)
  endif()
endif()

# opu_eigen: Eigen with OpenBLAS as the backend of its large products. EIGEN_USE_BLAS must be the
# same in every translation unit (ODR), hence one target that everything using Eigen links publicly.
add_library(opu_eigen INTERFACE)
target_link_libraries(opu_eigen INTERFACE Eigen3::Eigen BLAS::BLAS)
target_compile_definitions(opu_eigen INTERFACE EIGEN_USE_BLAS EIGEN_NO_AUTOMATIC_RESIZING)
