#pragma once
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/vfs.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <unistd.h>

/* setns() is only declared with _GNU_SOURCE; CLONE_NEWNET from <sched.h>. */
extern int setns(int fd, int nstype);
static inline int manx_enter_netns(int fd) { return setns(fd, 0x40000000 /* CLONE_NEWNET */); }
