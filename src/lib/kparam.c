/* kparam.c - see kparam.h. */
#include "kparam.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"

int64_t vy_kparam_read(const struct vy_kparam *p)
{
	char *text = NULL;
	int64_t v = -1;
	if (vy_read_file(p->path, 64, &text, NULL, NULL) == 0)
		v = strtoll(text, NULL, 10);
	free(text);
	return v;
}

static int write_value(const struct vy_kparam *p, int64_t v, vy_error *err)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%lld\n", (long long)v);
	if (vy_write_text(p->path, buf, err) < 0)
		return vy_error_wrap(err, "cannot set %s to %lld", p->name, (long long)v);
	return 0;
}

static void registry_file(const struct vy_kparam *p, const char *leaf, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", p->dir, leaf);
}

/* The registry's lock (flock on DIR/lock), shared by every agent here. */
static int lock_registry(const struct vy_kparam *p, vy_error *err)
{
	char path[PATH_MAX];
	if (vy_mkdir_p(p->dir, 0700, err) < 0)
		return -1;
	registry_file(p, "lock", path, sizeof(path));
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return vy_error_sys(err, errno, "open %s", path);
	while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
		;
	return fd;
}

/* Whether a process other than us holds a lease; removes dead holders. */
static bool others_hold(const struct vy_kparam *p)
{
	cleanup_closedir DIR *d = opendir(p->dir);
	struct dirent *de;
	bool any = false;
	while (d && (de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (pid <= 0 || *end || pid == getpid())
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno == EPERM) {
			any = true;
		} else {
			char path[PATH_MAX];
			registry_file(p, de->d_name, path, sizeof(path));
			unlink(path);
		}
	}
	return any;
}

/* With the registry locked and no holder left: put the saved value back
 * unless the value is no longer the one that was set. */
static void put_back(const struct vy_kparam *p)
{
	char path[PATH_MAX];
	char *saved = NULL;
	long long old = -1, set = -1;
	registry_file(p, "saved", path, sizeof(path));
	if (vy_read_file(path, 64, &saved, NULL, NULL) == 0 &&
	    sscanf(saved, "%lld %lld", &old, &set) == 2) {
		if (vy_kparam_read(p) == set)
			write_value(p, old, NULL);
		unlink(path);
	}
	free(saved);
}

int vy_kparam_acquire(struct vy_kparam *p, int64_t *was, int64_t *now, bool *raised,
		      vy_error *err)
{
	*raised = false;
	pthread_mutex_lock(&p->lock);
	int lfd = lock_registry(p, err);
	if (lfd < 0) {
		pthread_mutex_unlock(&p->lock);
		return -1;
	}
	int rc = 0;
	char path[PATH_MAX];
	*was = *now = vy_kparam_read(p);
	if (*was >= 0 && *was < p->need) {
		char saved[64];
		int n = snprintf(saved, sizeof(saved), "%lld %lld\n", (long long)*was,
				 (long long)p->set);
		registry_file(p, "saved", path, sizeof(path));
		if (access(path, F_OK) != 0)
			rc = vy_write_file_replace(path, saved, (size_t)n, 0600, err);
		if (rc == 0)
			rc = write_value(p, p->set, err);
		if (rc == 0) {
			*raised = true;
			*now = p->set;
		}
	}
	if (rc == 0 && p->leases++ == 0) {
		char leaf[32];
		snprintf(leaf, sizeof(leaf), "%d", (int)getpid());
		registry_file(p, leaf, path, sizeof(path));
		rc = vy_write_file_replace(path, "", 0, 0600, err);
		if (rc < 0)
			p->leases--;
	}
	close(lfd);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void vy_kparam_release(struct vy_kparam *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->leases == 0 || --p->leases > 0) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	int lfd = lock_registry(p, NULL);
	if (lfd >= 0) {
		char path[PATH_MAX], leaf[32];
		snprintf(leaf, sizeof(leaf), "%d", (int)getpid());
		registry_file(p, leaf, path, sizeof(path));
		unlink(path);
		if (!others_hold(p))
			put_back(p);
		close(lfd);
	}
	pthread_mutex_unlock(&p->lock);
}

void vy_kparam_sweep(struct vy_kparam *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->leases == 0 && access(p->dir, F_OK) == 0) {
		int lfd = lock_registry(p, NULL);
		if (lfd >= 0) {
			if (!others_hold(p))
				put_back(p);
			close(lfd);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

/* ---- expedited RCU grace periods -------------------------------------- */

static struct vy_kparam rcu_param = VY_KPARAM_INIT("kernel.rcu_expedited", "/sys/kernel/rcu_expedited",
						   "/run/voyager/rcu-expedited", 1, 1);

bool vy_rcu_expedite(char *how, size_t len)
{
	const char *off = getenv("VOYAGER_NO_RCU_EXPEDITE");
	if (off && *off && strcmp(off, "0") != 0) {
		snprintf(how, len, "off: VOYAGER_NO_RCU_EXPEDITE");
		return false;
	}
	int64_t was, now;
	bool raised;
	vy_error err;
	if (vy_kparam_acquire(&rcu_param, &was, &now, &raised, &err) < 0) {
		snprintf(how, len, "off: %s", err.msg);
		return false;
	}
	if (was < 0) {
		vy_kparam_release(&rcu_param);
		snprintf(how, len, "off: %s cannot be read", rcu_param.path);
		return false;
	}
	snprintf(how, len, "%s", raised ? "set" : "already on");
	return true;
}

void vy_rcu_expedite_end(void)
{
	vy_kparam_release(&rcu_param);
}

void vy_rcu_expedite_sweep(void)
{
	vy_kparam_sweep(&rcu_param);
}

/* ---- CPU wake-up latency ------------------------------------------------ */

int vy_cpu_latency_hold(char *how, size_t len)
{
	const char *off = getenv("VOYAGER_NO_CPU_LATENCY");
	if (off && *off && strcmp(off, "0") != 0) {
		snprintf(how, len, "off: VOYAGER_NO_CPU_LATENCY");
		return -1;
	}
	const char *dev = "/dev/cpu_dma_latency";
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		snprintf(how, len, "off: %s: %s", dev, strerror(errno));
		return -1;
	}
	/* What is in force before ours: the strictest request of all. */
	int32_t was = -1, zero = 0;
	if (read(fd, &was, sizeof(was)) != (ssize_t)sizeof(was))
		was = -1;
	if (write(fd, &zero, sizeof(zero)) != (ssize_t)sizeof(zero)) {
		snprintf(how, len, "off: %s: %s", dev, strerror(errno));
		close(fd);
		return -1;
	}
	snprintf(how, len, "%s", was == 0 ? "already 0" : "set");
	return fd;
}

void vy_cpu_latency_release(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}
