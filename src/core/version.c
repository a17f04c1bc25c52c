/* te_version(): the project version, passed in by the build (src/CMakeLists.txt). */
#include "tendril/te.h"

#ifndef TENDRIL_VERSION
#error "TENDRIL_VERSION must be defined by the build"
#endif

const char *te_version(void) { return TENDRIL_VERSION; }
