/* SwiftPM needs one source file to make bpf/include a C module for Swift. */
#include "manx/maps.h"
