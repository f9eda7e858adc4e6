/* util.c - see util.h. */
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "cleanup.h"

extern char **environ;

#define CAPTURE_MAX (1u << 20)

struct capture {
	int fd;
	char *buf;
	size_t len;
};

static void capture_read(struct capture *c)
{
	char tmp[16384];
	ssize_t n = read(c->fd, tmp, sizeof(tmp));
	if (n <= 0) {
		if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
			close(c->fd);
			c->fd = -1;
		}
		return;
	}
	size_t keep = (size_t)n;
	if (c->len + keep > CAPTURE_MAX)
		keep = CAPTURE_MAX - c->len;
	if (keep) {
		char *nb = realloc(c->buf, c->len + keep + 1);
		if (!nb)
			return;
		c->buf = nb;
		memcpy(c->buf + c->len, tmp, keep);
		c->len += keep;
		c->buf[c->len] = '\0';
	}
}

static int spawn_captured(char *const argv[], char *const envp[], int outfd[2],
			  int errfd[2], pid_t *pid, vy_error *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, errfd[1], 2);
	int rc = posix_spawnp(pid, argv[0], &fa, NULL, argv, envp ? envp : environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return vy_error_sys(err, rc, "cannot run %s", argv[0]);
	return 0;
}

/* Reap pid, killing it past the timeout.  A pidfd says the moment it
 * exits: a polling sleep here used to add up to 5 ms to every command,
 * and the freeze runs several. */
static int wait_child(pid_t pid, int timeout_ms, uint64_t start)
{
	int status = 0;
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	while (pfd >= 0) {
		int left = -1;
		if (timeout_ms) {
			uint64_t spent = vy_now_ms() - start;
			left = spent >= (uint64_t)timeout_ms ? 0 : (int)((uint64_t)timeout_ms - spent);
		}
		struct pollfd p = { pfd, POLLIN, 0 };
		int n = poll(&p, 1, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			kill(pid, SIGKILL);
		break;
	}
	if (pfd >= 0)
		close(pfd);
	for (;;) {
		pid_t r = waitpid(pid, &status, timeout_ms ? WNOHANG : 0);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			return 255;
		if (r == 0) {
			if (vy_now_ms() - start > (uint64_t)timeout_ms)
				kill(pid, SIGKILL);
			usleep(1000);
		}
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

int vy_cmd_run(char *const argv[], int timeout_ms, struct vy_cmd_result *res,
	       vy_error *err)
{
	return vy_cmd_run_env(argv, NULL, timeout_ms, res, err);
}

int vy_cmd_run_env(char *const argv[], char *const envp[], int timeout_ms,
		   struct vy_cmd_result *res, vy_error *err)
{
	int outp[2], errp[2];
	memset(res, 0, sizeof(*res));
	if (pipe2(outp, O_CLOEXEC) < 0)
		return vy_error_sys(err, errno, "pipe");
	if (pipe2(errp, O_CLOEXEC) < 0) {
		close(outp[0]);
		close(outp[1]);
		return vy_error_sys(err, errno, "pipe");
	}
	pid_t pid;
	int rc = spawn_captured(argv, envp, outp, errp, &pid, err);
	close(outp[1]);
	close(errp[1]);
	if (rc < 0) {
		close(outp[0]);
		close(errp[0]);
		return -1;
	}
	uint64_t start = vy_now_ms();
	struct capture cap[2] = { { outp[0], NULL, 0 }, { errp[0], NULL, 0 } };
	while (cap[0].fd >= 0 || cap[1].fd >= 0) {
		struct pollfd p[2] = { { cap[0].fd, POLLIN, 0 },
				       { cap[1].fd, POLLIN, 0 } };
		int n = poll(p, 2, 200);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++)
			if (cap[i].fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				capture_read(&cap[i]);
		if (timeout_ms && vy_now_ms() - start > (uint64_t)timeout_ms) {
			kill(pid, SIGKILL);
			break;
		}
	}
	for (int i = 0; i < 2; i++)
		if (cap[i].fd >= 0)
			close(cap[i].fd);
	res->status = wait_child(pid, timeout_ms, start);
	res->out = cap[0].buf ? cap[0].buf : strdup("");
	res->errout = cap[1].buf ? cap[1].buf : strdup("");
	return 0;
}

void vy_cmd_result_free(struct vy_cmd_result *res)
{
	free(res->out);
	free(res->errout);
	res->out = res->errout = NULL;
}

const char *vy_cmd_string(char *const argv[])
{
	static __thread char buf[1024];
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; argv[i] && used < sizeof(buf) - 1; i++) {
		int n = snprintf(buf + used, sizeof(buf) - used, "%s%s",
				 i ? " " : "", argv[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	return buf;
}

int vy_find_executable(const char *name, char *out, size_t outlen)
{
	if (strchr(name, '/')) {
		if (access(name, X_OK) != 0)
			return -1;
		snprintf(out, outlen, "%s", name);
		return 0;
	}
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	cleanup_free char *copy = strdup(path);
	if (!copy)
		return -1;
	char *save = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir;
	     dir = strtok_r(NULL, ":", &save)) {
		char cand[PATH_MAX];
		snprintf(cand, sizeof(cand), "%s/%s", dir, name);
		struct stat st;
		if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
		    access(cand, X_OK) == 0) {
			snprintf(out, outlen, "%s", cand);
			return 0;
		}
	}
	return -1;
}

uint64_t vy_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void vy_steps_start(struct vy_steps *st)
{
	memset(st, 0, sizeof(*st));
	st->last_us = now_us();
}

void vy_steps_mark(struct vy_steps *st, const char *name)
{
	uint64_t now = now_us();
	int i = 0;
	while (i < st->n && strcmp(st->name[i], name) != 0)
		i++;
	if (i == st->n) {
		if (st->n == VY_STEPS_MAX)
			i = VY_STEPS_MAX - 1; /* full: the last one takes the rest */
		else
			st->name[st->n++] = name;
	}
	st->us[i] += now - st->last_us;
	st->last_us = now;
}

json_object *vy_steps_json(const struct vy_steps *st)
{
	json_object *o = json_object_new_object();
	for (int i = 0; i < st->n; i++) {
		char text[32];
		snprintf(text, sizeof(text), "%.1f", (double)st->us[i] / 1000.0);
		json_object_object_add(o, st->name[i],
				       json_object_new_double_s((double)st->us[i] / 1000.0, text));
	}
	return o;
}

uint64_t vy_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void vy_random_id(char out[17])
{
	unsigned char b[8];
	if (RAND_bytes(b, sizeof(b)) != 1) {
		uint64_t t = vy_wall_ms() ^ ((uint64_t)getpid() << 32);
		memcpy(b, &t, sizeof(b));
	}
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int vy_mkdir_p(const char *path, unsigned mode, vy_error *err)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return vy_error_set(err, ENAMETOOLONG, "path too long: %s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return vy_error_sys(err, errno, "mkdir %s", buf);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return vy_error_sys(err, errno, "mkdir %s", buf);
	return 0;
}

static int rm_tree_at(int dirfd, dev_t dev, vy_error *err)
{
	cleanup_closedir DIR *d = fdopendir(dirfd);
	if (!d) {
		close(dirfd);
		return vy_error_sys(err, errno, "fdopendir");
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (st.st_dev != dev)
				return vy_error_set(err, EBUSY,
						    "refusing to remove across a mount point at %s",
						    de->d_name);
			int sub = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				return vy_error_sys(err, errno, "open %s", de->d_name);
			if (rm_tree_at(sub, dev, err) < 0)
				return vy_error_wrap(err, "%s", de->d_name);
			if (unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0)
				return vy_error_sys(err, errno, "rmdir %s", de->d_name);
		} else if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT) {
			return vy_error_sys(err, errno, "unlink %s", de->d_name);
		}
	}
	return 0;
}

int vy_rm_rf(const char *path, vy_error *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : vy_error_sys(err, errno, "stat %s", path);
	if (!S_ISDIR(st.st_mode)) {
		if (unlink(path) < 0)
			return vy_error_sys(err, errno, "unlink %s", path);
		return 0;
	}
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "open %s", path);
	if (rm_tree_at(fd, st.st_dev, err) < 0)
		return vy_error_wrap(err, "remove %s", path);
	if (rmdir(path) < 0)
		return vy_error_sys(err, errno, "rmdir %s", path);
	return 0;
}

static int fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	return fsync(fd);
}

static int write_replace(const char *path, const void *data, size_t len, unsigned mode,
			 bool durable, vy_error *err)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)gettid()) >= (int)sizeof(tmp))
		return vy_error_set(err, ENAMETOOLONG, "path too long: %s", path);
	cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return vy_error_sys(err, errno, "create %s", tmp);
	const char *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			unlink(tmp);
			return vy_error_sys(err, e, "write %s", tmp);
		}
		p += n;
		left -= (size_t)n;
	}
	if (durable && fsync(fd) < 0) {
		int e = errno;
		unlink(tmp);
		return vy_error_sys(err, e, "fsync %s", tmp);
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return vy_error_sys(err, e, "rename %s", path);
	}
	if (durable)
		fsync_parent(path);
	return 0;
}

int vy_write_file_atomic(const char *path, const void *data, size_t len,
			 unsigned mode, vy_error *err)
{
	return write_replace(path, data, len, mode, true, err);
}

int vy_write_file_replace(const char *path, const void *data, size_t len,
			  unsigned mode, vy_error *err)
{
	return write_replace(path, data, len, mode, false, err);
}

int vy_write_text(const char *path, const char *text, vy_error *err)
{
	cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "open %s", path);
	size_t n = strlen(text);
	ssize_t w = write(fd, text, n);
	if (w != (ssize_t)n)
		return vy_error_sys(err, w < 0 ? errno : EIO, "write '%.*s' to %s",
				    (int)strcspn(text, "\n"), text, path);
	return 0;
}

int vy_read_file(const char *path, size_t max, char **out, size_t *len,
		 vy_error *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "open %s", path);
	size_t cap = 4096, used = 0;
	cleanup_free char *buf = malloc(cap + 1);
	if (!buf)
		return vy_error_set(err, ENOMEM, "out of memory");
	for (;;) {
		if (used == cap) {
			if (cap >= max)
				return vy_error_set(err, EFBIG, "%s is larger than %zu bytes",
						    path, max);
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb)
				return vy_error_set(err, ENOMEM, "out of memory");
			buf = nb;
		}
		ssize_t n = read(fd, buf + used, cap - used);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return vy_error_sys(err, errno, "read %s", path);
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
	*out = take_ptr(buf);
	if (len)
		*len = used;
	return 0;
}

char *vy_file_tail(const char *path, int lines)
{
	char *buf = NULL;
	size_t len = 0;
	if (vy_read_file(path, 64u << 20, &buf, &len, NULL) < 0)
		return strdup("");
	size_t i = len;
	while (i > 0 && buf[i - 1] == '\n')
		i--;
	size_t end = i;
	int seen = 0;
	while (i > 0) {
		if (buf[i - 1] == '\n' && ++seen == lines)
			break;
		i--;
	}
	char *tail = strndup(buf + i, end - i);
	free(buf);
	return tail ? tail : strdup("");
}

int vy_free_bytes(const char *path, uint64_t *out, vy_error *err)
{
	struct statvfs sv;
	if (statvfs(path, &sv) < 0)
		return vy_error_sys(err, errno, "statvfs %s", path);
	*out = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

bool vy_name_is_safe(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 128 || !isalnum((unsigned char)name[0]))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '_' && c != '-' && c != '.')
			return false;
	}
	return true;
}

const char *vy_json_str(json_object *o, const char *key, const char *def)
{
	json_object *v;
	if (o && json_object_object_get_ex(o, key, &v) &&
	    json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return def;
}

int64_t vy_json_int(json_object *o, const char *key, int64_t def)
{
	json_object *v;
	if (o && json_object_object_get_ex(o, key, &v) &&
	    (json_object_is_type(v, json_type_int) ||
	     json_object_is_type(v, json_type_double)))
		return json_object_get_int64(v);
	return def;
}

bool vy_path_is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return n && !strncmp(path, dir, n) && path[n] == '/' && path[n + 1];
}

void vy_failpoint(const char *name)
{
	const char *want = getenv("VOYAGER_FAILPOINT");
	if (want && !strcmp(want, name)) {
		fprintf(stderr, "failpoint %s: exiting now, as asked\n", name);
		_exit(137);
	}
}

void vy_waitpoint(const char *name)
{
	const char *want = getenv("VOYAGER_WAITPOINT");
	size_t n = strlen(name);
	if (!want || strncmp(want, name, n) || want[n] != ':' || want[n + 1] != '/')
		return;
	const char *go = want + n + 1;
	char reached[PATH_MAX];
	snprintf(reached, sizeof(reached), "%s.reached", go);
	int fd = open(reached, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	fprintf(stderr, "waitpoint %s: waiting for %s\n", name, go);
	for (int i = 0; i < 600 && access(go, F_OK) < 0; i++)
		usleep(100 * 1000);
}
