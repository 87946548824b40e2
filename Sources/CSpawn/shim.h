/* The two GNU calls ManxCommand needs that Swift's Glibc module does not
 * declare: pipes that are close-on-exec from the start, and a child that
 * closes every descriptor but its three. glibc declares them only under
 * _GNU_SOURCE, which would give this module's copies of the system types
 * other definitions than the Glibc module's: declared here instead. */
#ifndef MANX_CSPAWN_SHIM_H
#define MANX_CSPAWN_SHIM_H
#include <fcntl.h>
#include <spawn.h>

extern int pipe2(int fds[2], int flags);
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);

static inline int manx_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

static inline int manx_spawn_close_from(posix_spawn_file_actions_t *actions, int from)
{
	return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
#endif
