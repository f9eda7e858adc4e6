/* kparam.h - kernel settings that migrations borrow: a value written to a
 * /proc/sys or /sys file for as long as some migration needs it, and put
 * back after the last one.
 *
 * Every agent on a kernel shares one lease registry per setting (a
 * directory under /run/voyager): one file per holding process, and
 * "saved" = "OLD SET", written by whoever changed the value.  The value
 * is put back when the last holder lets go, unless someone else changed
 * it meanwhile; a holder that died is passed over, and vy_kparam_sweep()
 * (at an agent's start) puts back what dead holders left.  The registry's
 * files are written without fsync: they only have to outlive processes,
 * and a reboot resets the kernel's values anyway.
 */
#ifndef VY_KPARAM_H
#define VY_KPARAM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct vy_kparam {
	const char *name; /* for messages: "fs.pipe-max-size" */
	const char *path; /* the file: "/proc/sys/fs/pipe-max-size" */
	const char *dir;  /* the lease registry */
	int64_t need;     /* a value below this is raised ... */
	int64_t set;      /* ... to this */
	pthread_mutex_t lock;
	int leases;       /* held by this process */
};

#define VY_KPARAM_INIT(name_, path_, dir_, need_, set_)                         \
	{ .name = (name_), .path = (path_), .dir = (dir_), .need = (need_),      \
	  .set = (set_), .lock = PTHREAD_MUTEX_INITIALIZER, .leases = 0 }

/* Take a lease: raise the value to p->set if it is below p->need.  *was
 * gets the value found, *now the value in force, *raised whether this
 * call changed it.  0, or -1 with err (then no lease is held). */
int vy_kparam_acquire(struct vy_kparam *p, int64_t *was, int64_t *now, bool *raised,
		      vy_error *err);
/* Let go of one lease; the last one out puts the value back. */
void vy_kparam_release(struct vy_kparam *p);
/* Put back what holders that died left changed (none alive but us). */
void vy_kparam_sweep(struct vy_kparam *p);
/* The value now, or -1. */
int64_t vy_kparam_read(const struct vy_kparam *p);

/* Expedited RCU grace periods (/sys/kernel/rcu_expedited) for a freeze.
 * CRIU's dump and restore and the runtimes mount and unmount (the cgroup
 * yard, the mount namespace), and each unmount waits out a grace period:
 * on the 2-core VMs here a redis freeze went from 216 to 165 ms (medians)
 * with them expedited,
 * at the cost of an IPI to every CPU per grace period while it lasts.
 * Takes a lease (see above) unless VOYAGER_NO_RCU_EXPEDITE=1 is set in
 * the agent's environment; true when one is held, and how (the report's
 * words: "set", "already on", "off: why") in how. */
bool vy_rcu_expedite(char *how, size_t len);
void vy_rcu_expedite_end(void);
void vy_rcu_expedite_sweep(void);

/* A CPU wake-up latency bound of 0 (PM QoS, /dev/cpu_dma_latency) for a
 * freeze.  CRIU's dump and restore are chains of hand-offs between
 * processes (the parasite's RPC, one per 4 MiB page pipe; runc and
 * `criu swrk`; our channel), and each waits for an idle CPU to wake:
 * on the KVM guests here (cpuidle-haltpoll) a cross-CPU round trip took
 * 90 us, and 7 us with the bound, as idle CPUs then poll instead of
 * halting.  The cost: idle CPUs spin while it is held.  The kernel holds
 * the request while the returned fd is open and drops it when the fd
 * closes, the holder's death included, so there is nothing to sweep.
 * Off with VOYAGER_NO_CPU_LATENCY=1 in the agent's environment.  The fd,
 * or -1; the report's words in how: "set", "already 0", "off: why". */
int vy_cpu_latency_hold(char *how, size_t len);
/* Close *fd (a no-op at -1) and set it to -1. */
void vy_cpu_latency_release(int *fd);

#endif
