# Headers, libraries, a pkg-config file and a CMake package config.
include(CMakePackageConfigHelpers)
install(DIRECTORY include/tendril DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tendril tendril_static EXPORT TendrilTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT TendrilTargets NAMESPACE tendril:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
configure_package_config_file(cmake/tendrilConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tendrilConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tendrilConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tendrilConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/tendrilConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
# Relocatable: the prefix is found from the .pc file's own location, so an install with
# `cmake --install --prefix` elsewhere still resolves.
file(RELATIVE_PATH TENDRIL_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(cmake/tendril.pc.in ${CMAKE_CURRENT_BINARY_DIR}/tendril.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tendril.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
