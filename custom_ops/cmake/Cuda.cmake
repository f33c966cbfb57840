# The CUDA side of the library (custom_ops/src/cuda/): built into the same libpasa_onnx_ops.so
# when nvcc is there. PASA_ONNX_CUDA=auto (default) builds it when CMake finds a CUDA compiler,
# on requires it, off never builds it. The CUDA runtime is linked statically, so the library
# still loads on machines without a GPU or a CUDA installation (it then only registers kernels
# that onnxruntime's CPU execution provider can use).
# Result: target pasa_cuda (static, position independent) and PASA_HAVE_CUDA (TRUE/FALSE).
set(PASA_ONNX_CUDA "auto" CACHE STRING "Build the CUDA kernels: auto, on or off")
set_property(CACHE PASA_ONNX_CUDA PROPERTY STRINGS auto on off)
if(DEFINED ENV{PASA_ONNX_CUDA} AND NOT "$ENV{PASA_ONNX_CUDA}" STREQUAL "")
  set(PASA_ONNX_CUDA "$ENV{PASA_ONNX_CUDA}")
endif()
string(TOLOWER "${PASA_ONNX_CUDA}" _pasa_cuda_mode)
set(PASA_HAVE_CUDA FALSE)

if(NOT _pasa_cuda_mode MATCHES "^(auto|on|off)$")
  message(FATAL_ERROR "PASA_ONNX_CUDA=${PASA_ONNX_CUDA}; expected auto, on or off")
endif()

if(NOT _pasa_cuda_mode STREQUAL "off")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(PASA_HAVE_CUDA TRUE)
  elseif(_pasa_cuda_mode STREQUAL "on")
    message(FATAL_ERROR "PASA_ONNX_CUDA=on but no CUDA compiler was found (put nvcc on PATH or set "
                        "CMAKE_CUDA_COMPILER)")
  else()
    message(STATUS "pasa-onnx: no CUDA compiler found; building the CPU kernel only")
  endif()
endif()

if(PASA_HAVE_CUDA)
  # sm_80 and sm_90 machine code plus compute_90 PTX for later GPUs. Overridable.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  file(GLOB _pasa_cuda_sources CONFIGURE_DEPENDS
       ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/*.cu ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/*.cc
       ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/flash/*.cu ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/flash/*.cc)
  # Standalone test programs (a main() each) are not part of the library.
  list(FILTER _pasa_cuda_sources EXCLUDE REGEX "selftest|_test\\.cu$")
  # The Hopper kernel (wgmma, setmaxnreg) needs the sm_90a target, whose code runs on compute
  # capability 9.0 only: its own object library, whatever CMAKE_CUDA_ARCHITECTURES says.
  list(FILTER _pasa_cuda_sources EXCLUDE REGEX "_sm90\\.cu$")
  # The CUDA execution provider's onnxruntime kernel class (plain C++, no CUDA headers) lives
  # with the kernels it launches; the binding registers it when PASA_HAVE_CUDA is defined.
  add_library(pasa_cuda STATIC ${_pasa_cuda_sources} ${CMAKE_CURRENT_SOURCE_DIR}/src/ort/cuda_kernel.cc)
  target_include_directories(pasa_cuda PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src ${PASA_GENERATED_DIR})
  target_include_directories(pasa_cuda SYSTEM PRIVATE ${ORT_INCLUDE_DIR})
  target_compile_definitions(pasa_cuda PUBLIC PASA_HAVE_CUDA=1)
  set_target_properties(pasa_cuda PROPERTIES
    CUDA_RUNTIME_LIBRARY Static POSITION_INDEPENDENT_CODE ON
    CXX_VISIBILITY_PRESET hidden CUDA_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  target_compile_options(pasa_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-fvisibility=hidden --expt-relaxed-constexpr
      -Werror=all-warnings -lineinfo>
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow>)
  # The static runtime (libcudart_static.a with its librt/libpthread/libdl needs): no CUDA
  # library is needed at load time; the driver (libcuda.so.1) is opened on first use.
  target_link_libraries(pasa_cuda PUBLIC CUDA::cudart_static)
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
    add_library(pasa_cuda_sm90 OBJECT ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/flash/flash_sm90.cu)
    target_include_directories(pasa_cuda_sm90 PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
    set_target_properties(pasa_cuda_sm90 PROPERTIES
      CUDA_ARCHITECTURES "90a-real" POSITION_INDEPENDENT_CODE ON
      CUDA_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
    target_compile_options(pasa_cuda_sm90 PRIVATE
      -Xcompiler=-Wall,-Wextra,-fvisibility=hidden --expt-relaxed-constexpr -Werror=all-warnings -lineinfo)
    target_sources(pasa_cuda PRIVATE $<TARGET_OBJECTS:pasa_cuda_sm90>)
    set(PASA_CUDA_SM90 TRUE)
  else()
    target_compile_definitions(pasa_cuda PRIVATE PASA_HAVE_SM90=0)
    set(PASA_CUDA_SM90 FALSE)
  endif()
  message(STATUS "pasa-onnx: building the CUDA kernels for ${CMAKE_CUDA_ARCHITECTURES} (sm_90a kernel: ${PASA_CUDA_SM90})")
endif()
