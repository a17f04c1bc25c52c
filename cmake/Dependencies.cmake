# libfabric is required; libibverbs (verbs backend) and cmocka (tests) are optional.
# Plain find_path/find_library so CMAKE_PREFIX_PATH can point at a staged copy
# (the GPU machine has libfabric's runtime but no headers: its build points CMAKE_PREFIX_PATH
# at a staged copy in .deps/usr, as tests/gpu/engine/run_on_gpu.sh and
# bench/bench_all_to_all/device_run.sh do).
find_package(Threads REQUIRED)

find_path(FABRIC_INCLUDE_DIR rdma/fabric.h)
find_library(FABRIC_LIBRARY NAMES fabric)
if(NOT FABRIC_INCLUDE_DIR OR NOT FABRIC_LIBRARY)
  # `pip install .` shows this text: say what to install.
  message(FATAL_ERROR "tendril needs libfabric's development files (rdma/fabric.h, libfabric.so), "
                      "not found: apt-get install libfabric-dev (Debian/Ubuntu), "
                      "dnf install libfabric-devel (Fedora/RHEL), or point CMAKE_PREFIX_PATH at a "
                      "libfabric install (pip: CMAKE_PREFIX_PATH=/opt/libfabric pip install .)")
endif()
add_library(tendril::fabric UNKNOWN IMPORTED)
set_target_properties(tendril::fabric PROPERTIES
  IMPORTED_LOCATION ${FABRIC_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${FABRIC_INCLUDE_DIR})
file(STRINGS ${FABRIC_INCLUDE_DIR}/rdma/fabric.h _fi_major REGEX "#define FI_MAJOR_VERSION")
file(STRINGS ${FABRIC_INCLUDE_DIR}/rdma/fabric.h _fi_minor REGEX "#define FI_MINOR_VERSION")
message(STATUS "tendril: libfabric headers ${FABRIC_INCLUDE_DIR} (${_fi_major} ${_fi_minor})")

find_path(VERBS_INCLUDE_DIR infiniband/verbs.h)
find_library(VERBS_LIBRARY NAMES ibverbs)
if(VERBS_INCLUDE_DIR AND VERBS_LIBRARY)
  set(TENDRIL_HAVE_VERBS ON)
endif()

if(TENDRIL_TESTS)
  find_path(CMOCKA_INCLUDE_DIR cmocka.h)
  find_library(CMOCKA_LIBRARY NAMES cmocka)
  if(NOT CMOCKA_INCLUDE_DIR OR NOT CMOCKA_LIBRARY)
    message(FATAL_ERROR "cmocka not found: apt-get install libcmocka-dev, or -DTENDRIL_TESTS=OFF")
  endif()
endif()
