# Locate the onnxruntime C/C++ API headers. The PyPI wheel ships none, so the search order is:
#   1. ORT_INCLUDE_DIR (CMake cache variable or environment variable),
#   2. /usr/include/onnxruntime (Debian 13's libonnxruntime-dev),
#   3. Debian 13's libonnxruntime-dev fetched with a private apt state (never touches the
#      system's sources) and unpacked into the build tree.
# Result: ORT_INCLUDE_DIR pointing at a folder holding onnxruntime_c_api.h.

function(_pasa_has_ort_headers dir out)
  if(dir AND EXISTS "${dir}/onnxruntime_c_api.h" AND EXISTS "${dir}/onnxruntime_cxx_api.h")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

if(NOT ORT_INCLUDE_DIR AND DEFINED ENV{ORT_INCLUDE_DIR})
  set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}")
endif()

if(ORT_INCLUDE_DIR)
  _pasa_has_ort_headers("${ORT_INCLUDE_DIR}" _ok)
  if(NOT _ok)
    message(FATAL_ERROR "ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} does not contain onnxruntime_c_api.h "
                        "and onnxruntime_cxx_api.h")
  endif()
else()
  _pasa_has_ort_headers("/usr/include/onnxruntime" _ok)
  if(_ok)
    set(ORT_INCLUDE_DIR "/usr/include/onnxruntime")
  else()
    set(_fetched "${CMAKE_BINARY_DIR}/ort-headers/usr/include/onnxruntime")
    _pasa_has_ort_headers("${_fetched}" _ok)
    if(NOT _ok)
      message(STATUS "pasa-onnx: fetching onnxruntime headers (Debian trixie libonnxruntime-dev)")
      execute_process(
        COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/fetch_ort_headers.sh" "${CMAKE_BINARY_DIR}/ort-headers"
        RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
      _pasa_has_ort_headers("${_fetched}" _ok)
      if(NOT _rc EQUAL 0 OR NOT _ok)
        message(FATAL_ERROR
          "pasa-onnx: no onnxruntime C/C++ API headers found.\n${_out}${_err}\n"
          "Provide them with -DORT_INCLUDE_DIR=<dir> or the ORT_INCLUDE_DIR environment variable "
          "(a folder holding onnxruntime_c_api.h, e.g. from an onnxruntime release archive), or "
          "install Debian 13's libonnxruntime-dev.")
      endif()
    endif()
    set(ORT_INCLUDE_DIR "${_fetched}")
  endif()
endif()
set(ORT_INCLUDE_DIR "${ORT_INCLUDE_DIR}" CACHE PATH "onnxruntime C/C++ API headers" FORCE)
message(STATUS "pasa-onnx: onnxruntime headers from ${ORT_INCLUDE_DIR}")
