/* Umbrella header: everything public in Tendril. */
#ifndef TENDRIL_TENDRIL_H
#define TENDRIL_TENDRIL_H
#include <tendril/te.h>
#include <tendril/te_topo.h>
#endif
