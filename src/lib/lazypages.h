/* lazypages.h - the CRIU processes and host settings behind post-copy
 * memory (CRIU "lazy pages"), without the migration logic.
 *
 * Source: `runc checkpoint --leave-running --lazy-pages --page-server
 * 127.0.0.1:PORT --status-fd 3` runs in the background.  CRIU writes one
 * byte to the status fd once the images (without pages) are written and
 * its page server listens; it then serves pages until its client closes
 * the connection, and exits.  The page server listens on 0.0.0.0 whatever
 * address it is given (CRIU 4.2.1 in lazy mode takes only the port), so a
 * guard (an nftables table in the host's network namespace) drops every
 * packet for that port that does not come from the loopback.
 *
 * Target: `criu lazy-pages --page-server --address 127.0.0.1 --port PORT`
 * runs in the background, then `runc restore --lazy-pages` hands it the
 * restored tasks' userfaultfds through WORK/lazy-pages.socket.  It exits 0
 * once every page has arrived, and that exit status is the only witness
 * of it: the source's checkpoint exits 0 on any clean end of file.
 *
 * Without CAP_SYS_RESOURCE, CRIU cannot size its 4 MiB page pipe above
 * fs.pipe-max-size and fails at the first page request ("page-pipe:
 * splice: -1: Bad file descriptor").  vy_pipe_size_acquire() raises the
 * limit for as long as a lease is held, across every voyagerd sharing the
 * kernel, and the last lease out puts the old value back.
 */
#ifndef VY_LAZYPAGES_H
#define VY_LAZYPAGES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "runtime.h"

/* CRIU's page pipe is 4 MiB; 16 MiB is what was verified here. */
#define VY_PIPE_SIZE_NEEDED (4u << 20)
#define VY_PIPE_SIZE_RAISED (16u << 20)

/* A background child with its combined output in a log file. */
struct vy_lazy_proc {
	pid_t pid;        /* 0 once reaped */
	int status;       /* exit code, or 128+signal, once reaped */
	int status_fd;    /* dump: read end of CRIU's status pipe (-1 if none) */
	char log[4096];   /* the child's stdout and stderr */
};

/* Does this runtime's checkpoint take --lazy-pages, --page-server and
 * --status-fd?  (runc does; crun 1.21 does not.)  Cached per binary. */
bool vy_runtime_has_lazy_pages(const struct vy_runtime *rt);

/* A free TCP port on 127.0.0.1 (bound, read, closed). */
int vy_lazy_free_port(int *port, vy_error *err);

/* Source: start the lazy checkpoint of a paused container; the caller
 * then waits for vy_lazy_dump_ready(). */
int vy_lazy_dump_start(const struct vy_runtime *rt, const char *id,
		       const char *image_dir, const char *work_dir,
		       const struct vy_checkpoint_opts *opts, int port,
		       struct vy_lazy_proc *p, vy_error *err);
/* Wait for CRIU's status byte; fails with the exit status and the last
 * lines of dump.log if the checkpoint ends (or timeout_ms passes) first. */
int vy_lazy_dump_ready(struct vy_lazy_proc *p, const char *work_dir,
		       int timeout_ms, vy_error *err);
/* End a page-server session whose client never came: connect to it on the
 * loopback and close, which CRIU takes for "transfer over".  False when
 * nothing listened there. */
bool vy_lazy_poke(int port);

/* Target: start `criu lazy-pages`; it reads the images at once, then
 * makes WORK/lazy-pages.socket, which runc restore --lazy-pages connects
 * to.  vy_lazy_daemon_ready() waits for that socket: the caller may do
 * other work in between (the daemon's start took 7 ms here). */
int vy_lazy_daemon_start(const char *image_dir, const char *work_dir,
			 const char *addr, int port, struct vy_lazy_proc *p,
			 vy_error *err);
int vy_lazy_daemon_ready(struct vy_lazy_proc *p, const char *work_dir, vy_error *err);

/* Background page traffic yields to the restore, which is downtime: the
 * lazy-pages daemon and the tunnel's threads run at this nice value (a
 * demand fault still goes first in its own queue; only the CPU share
 * changes, and only when the CPUs are busy). */
#define VY_LAZY_NICE 10
/* Lower the calling thread's priority to VY_LAZY_NICE (threads it starts
 * inherit it). */
void vy_lazy_background_thread(void);

/* Reap p if it has ended, waiting at most timeout_ms (0: just look).
 * Returns true once it has ended (p->status is then set). */
bool vy_lazy_wait(struct vy_lazy_proc *p, int timeout_ms);
/* SIGKILL and reap (no-op once reaped). */
void vy_lazy_kill(struct vy_lazy_proc *p);

/* Drop packets to TCP port from anywhere but the loopback, in this
 * network namespace, until vy_lazy_guard_remove(name). */
int vy_lazy_guard_add(const char *name, int port, vy_error *err);
int vy_lazy_guard_remove(const char *name, vy_error *err);

/* Raise fs.pipe-max-size to VY_PIPE_SIZE_RAISED if CRIU needs it here (no
 * CAP_SYS_RESOURCE and a limit under 4 MiB).  *was gets the value found,
 * *now the value in force; *raised whether we changed it.  Each successful
 * call holds a lease until vy_pipe_size_release(). */
int vy_pipe_size_acquire(int64_t *was, int64_t *now, bool *raised, vy_error *err);
void vy_pipe_size_release(void);
/* At an agent's start: put back what an agent that died left raised. */
void vy_pipe_size_sweep(void);

#endif
