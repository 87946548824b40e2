/* rtnetlink's message types, flags and attribute numbers from the kernel's
 * UAPI headers, and setns, which glibc declares only under _GNU_SOURCE
 * (defining it here would give this module's copies of the system types
 * other definitions than the Glibc module's). */
#ifndef MANX_CNETLINK_SHIM_H
#define MANX_CNETLINK_SHIM_H
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/veth.h>

extern int setns(int fd, int nstype);

/* CLONE_NEWNET, also a _GNU_SOURCE name. */
static const int manx_clone_newnet = 0x40000000;
#endif
