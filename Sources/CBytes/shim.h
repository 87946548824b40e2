/* glibc's memmem (a two-way search), which Swift's Glibc module does not
 * declare: glibc declares it only under _GNU_SOURCE (see CSpawn's shim). */
#ifndef MANX_CBYTES_SHIM_H
#define MANX_CBYTES_SHIM_H
#include <stddef.h>

extern void *memmem(const void *haystack, size_t haystacklen, const void *needle, size_t needlelen);
#endif
