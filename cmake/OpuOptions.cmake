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
if(OPU_NATIVE)
  target_compile_options(opu_warnings INTERFACE -march=native)
endif()
if(OPU_SANITIZE)
  target_compile_options(opu_warnings INTERFACE -fsanitize=${OPU_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(opu_warnings INTERFACE -fsanitize=${OPU_SANITIZE})
endif()

# opu_eigen: Eigen with OpenBLAS as the backend of its large products. EIGEN_USE_BLAS must be the
# same in every translation unit (ODR), hence one target that everything using Eigen links publicly.
add_library(opu_eigen INTERFACE)
target_link_libraries(opu_eigen INTERFACE Eigen3::Eigen BLAS::BLAS)
target_compile_definitions(opu_eigen INTERFACE EIGEN_USE_BLAS EIGEN_NO_AUTOMATIC_RESIZING)
