# Headers, libraries, a pkg-config file and a CMake package config.
include(CMakePackageConfigHelpers)
install(DIRECTORY include/tendril DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tendril tendril_static EXPORT TendrilTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT TendrilTargets NAMESPACE tendril:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
configure_package_config_file(cmake/TendrilConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/TendrilConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/TendrilConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/TendrilConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/TendrilConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
configure_file(cmake/tendril.pc.in ${CMAKE_CURRENT_BINARY_DIR}/tendril.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tendril.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
