/* lazypages.c - see lazypages.h. */
#include "lazypages.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "kparam.h"
#include "net.h"
#include "util.h"

extern char **environ;

#define PIPE_SYSCTL "/proc/sys/fs/pipe-max-size"
#define LEASE_DIR "/run/voyager/pipe-max-size"

/* ---- the runtime ------------------------------------------------------ */

bool vy_runtime_has_lazy_pages(const struct vy_runtime *rt)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static char cached_for[PATH_MAX];
	static bool cached;
	if (!rt->path[0])
		return false;
	pthread_mutex_lock(&lock);
	if (strcmp(cached_for, rt->path) != 0) {
		char *argv[] = { (char *)rt->path, "checkpoint", "--help", NULL };
		struct vy_cmd_result res;
		cached = false;
		if (vy_cmd_run(argv, 10000, &res, NULL) == 0) {
			cached = strstr(res.out, "--lazy-pages") && strstr(res.out, "--page-server") &&
				 strstr(res.out, "--status-fd");
			vy_cmd_result_free(&res);
		}
		snprintf(cached_for, sizeof(cached_for), "%s", rt->path);
	}
	bool has = cached;
	pthread_mutex_unlock(&lock);
	return has;
}

int vy_lazy_free_port(int *port, vy_error *err)
{
	cleanup_close int fd = -1;
	if (vy_net_listen("127.0.0.1:0", &fd, err) < 0)
		return -1;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
		return vy_error_sys(err, errno, "getsockname");
	*port = ntohs(sa.sin_port);
	return 0;
}

/* ---- background children ---------------------------------------------- */

/* argv with stdin on /dev/null, stdout and stderr appended to p->log, and
 * (when status_w >= 0) that fd as the child's fd 3. */
static int spawn_logged(char *const argv[], char *const envp[], int status_w,
			struct vy_lazy_proc *p, vy_error *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, p->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	if (status_w >= 0)
		posix_spawn_file_actions_adddup2(&fa, status_w, 3);
	int rc = posix_spawnp(&p->pid, argv[0], &fa, NULL, argv, envp ? envp : environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		p->pid = 0;
		return vy_error_sys(err, rc, "cannot run %s", argv[0]);
	}
	return 0;
}

void vy_lazy_background_thread(void)
{
	/* Linux: PRIO_PROCESS with a thread id sets that thread's nice value. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), VY_LAZY_NICE);
}

bool vy_lazy_wait(struct vy_lazy_proc *p, int timeout_ms)
{
	uint64_t start = vy_now_ms();
	while (p->pid > 0) {
		int st = 0;
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid || (r < 0 && errno != EINTR)) {
			p->status = r < 0 ? 255 : WIFEXITED(st) ? WEXITSTATUS(st)
				  : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
			p->pid = 0;
			break;
		}
		if (vy_now_ms() - start >= (uint64_t)timeout_ms)
			return false;
		usleep(10000);
	}
	if (p->status_fd >= 0) {
		close(p->status_fd);
		p->status_fd = -1;
	}
	return true;
}

void vy_lazy_kill(struct vy_lazy_proc *p)
{
	if (p->pid > 0)
		kill(p->pid, SIGKILL);
	vy_lazy_wait(p, 10000);
}

int vy_lazy_dump_start(const struct vy_runtime *rt, const char *id,
		       const char *image_dir, const char *work_dir,
		       const struct vy_checkpoint_opts *opts, int port,
		       struct vy_lazy_proc *p, vy_error *err)
{
	char ps[32];
	const char *argv[32];
	int n = 0;
	snprintf(ps, sizeof(ps), "127.0.0.1:%d", port);
	argv[n++] = rt->path;
	if (rt->root[0]) {
		argv[n++] = "--root";
		argv[n++] = rt->root;
	}
	argv[n++] = "checkpoint";
	argv[n++] = "--image-path";
	argv[n++] = image_dir;
	argv[n++] = "--work-path";
	argv[n++] = work_dir;
	/* --leave-running always: without it CRIU kills the source's tasks
	 * when the session ends, whether or not the target got every page. */
	argv[n++] = "--leave-running";
	argv[n++] = "--lazy-pages";
	argv[n++] = "--page-server";
	argv[n++] = ps;
	argv[n++] = "--status-fd";
	argv[n++] = "3";
	if (opts && opts->tcp_established)
		argv[n++] = "--tcp-established";
	if (opts && opts->file_locks)
		argv[n++] = "--file-locks";
	if (opts && opts->ext_unix_sk)
		argv[n++] = "--ext-unix-sk";
	argv[n++] = id;
	argv[n] = NULL;
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return vy_error_sys(err, errno, "pipe");
	memset(p, 0, sizeof(*p));
	p->status_fd = fds[0];
	snprintf(p->log, sizeof(p->log), "%s/checkpoint.out", work_dir);
	char **env = NULL;
	if (opts && opts->criu_config && opts->criu_config[0] &&
	    !(env = vy_criu_env(opts->criu_config))) {
		close(fds[0]);
		close(fds[1]);
		p->status_fd = -1;
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	int rc = spawn_logged((char *const *)argv, env, fds[1], p, err);
	vy_criu_env_free(env);
	close(fds[1]);
	if (rc < 0) {
		close(p->status_fd);
		p->status_fd = -1;
		return vy_error_wrap(err, "lazy checkpoint of %s", id);
	}
	return 0;
}

int vy_lazy_dump_ready(struct vy_lazy_proc *p, const char *work_dir,
		       int timeout_ms, vy_error *err)
{
	struct pollfd pf = { .fd = p->status_fd, .events = POLLIN };
	int n;
	do
		n = poll(&pf, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	char byte;
	if (n > 0 && read(p->status_fd, &byte, 1) == 1)
		return 0;
	/* No byte: CRIU ended, or hangs.  Either way it must be gone before
	 * the caller thaws: a live CRIU holds the tasks under ptrace. */
	if (!vy_lazy_wait(p, n == 0 ? 0 : 30000))
		vy_lazy_kill(p);
	char log[PATH_MAX + 16];
	snprintf(log, sizeof(log), "%s/dump.log", work_dir);
	cleanup_free char *tail = vy_file_tail(log, 6);
	cleanup_free char *out = vy_file_tail(p->log, 3);
	return vy_error_set(err, EIO, "lazy checkpoint: %s (exit %d): %s%s%s",
			    n == 0 ? "no status byte in time" : "CRIU ended before its page "
			    "server was ready", p->status, out[0] ? out : "",
			    tail[0] ? "; last lines of CRIU log: " : "", tail);
}

bool vy_lazy_poke(int port)
{
	char spec[32];
	int fd = -1;
	snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
	if (vy_net_connect(spec, vy_net_deadline_after(2000), 2000, &fd, NULL) < 0)
		return false;
	close(fd);
	return true;
}

int vy_lazy_daemon_start(const char *image_dir, const char *work_dir,
			 const char *addr, int port, struct vy_lazy_proc *p,
			 vy_error *err)
{
	char ps[16], sock[PATH_MAX + 32];
	snprintf(ps, sizeof(ps), "%d", port);
	char *argv[] = { "criu", "lazy-pages", "--page-server", "--address", (char *)addr,
			 "--port", ps, "--images-dir", (char *)image_dir,
			 "--work-dir", (char *)work_dir, "-v2", "-o", "lazy-pages.log", NULL };
	memset(p, 0, sizeof(*p));
	p->status_fd = -1;
	snprintf(p->log, sizeof(p->log), "%s/lazy-pages.out", work_dir);
	snprintf(sock, sizeof(sock), "%s/lazy-pages.socket", work_dir);
	unlink(sock);
	/* The daemon dies with the thread that waits for it: an agent that
	 * crashes must not leave it behind (never do this for the source's
	 * checkpoint: killing CRIU there lets the frozen container run). */
	pid_t parent = getpid();
	p->pid = fork();
	if (p->pid < 0) {
		p->pid = 0;
		return vy_error_sys(err, errno, "fork");
	}
	if (p->pid == 0) {
		/* An agent that died before this line sends no signal: then
		 * the parent is another process already (t_postcopy's
		 * failpoint right after the fork found such a daemon left). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		int in = open("/dev/null", O_RDONLY), out = open(p->log, O_WRONLY | O_CREAT |
								  O_APPEND, 0600);
		if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(127);
		setpriority(PRIO_PROCESS, 0, VY_LAZY_NICE);
		execvp(argv[0], argv);
		_exit(127);
	}
	return 0;
}

int vy_lazy_daemon_ready(struct vy_lazy_proc *p, const char *work_dir, vy_error *err)
{
	char sock[PATH_MAX + 32];
	snprintf(sock, sizeof(sock), "%s/lazy-pages.socket", work_dir);
	/* Inside the freeze: look often (10 s in all). */
	for (int i = 0; i < 5000; i++) {
		struct stat st;
		if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode))
			return 0;
		if (vy_lazy_wait(p, 0))
			break;
		usleep(2000);
	}
	vy_lazy_kill(p);
	char log[PATH_MAX + 32];
	snprintf(log, sizeof(log), "%s/lazy-pages.log", work_dir);
	cleanup_free char *tail = vy_file_tail(log, 4);
	return vy_error_set(err, EIO, "criu lazy-pages did not start (exit %d)%s%s", p->status,
			    tail[0] ? ": " : "", tail);
}

/* ---- the guard -------------------------------------------------------- */

static int run_nft(const char *script, vy_error *err)
{
	char *argv[] = { "nft", (char *)script, NULL };
	struct vy_cmd_result res;
	if (vy_cmd_run(argv, 10000, &res, err) < 0)
		return -1;
	int rc = 0;
	if (res.status != 0)
		rc = vy_error_set(err, EIO, "nft: exit %d: %s", res.status, res.errout);
	vy_cmd_result_free(&res);
	return rc;
}

int vy_lazy_guard_add(const char *name, int port, vy_error *err)
{
	char script[512];
	/* Priority -300: before anything an administrator's ruleset accepts;
	 * a drop in any base chain is final. */
	snprintf(script, sizeof(script),
		 "add table inet %s; "
		 "add chain inet %s input { type filter hook input priority -300; policy accept; }; "
		 "add rule inet %s input iifname != \"lo\" tcp dport %d drop",
		 name, name, name, port);
	if (run_nft(script, err) < 0)
		return vy_error_wrap(err, "guarding the page server's port %d", port);
	return 0;
}

int vy_lazy_guard_remove(const char *name, vy_error *err)
{
	char script[160];
	snprintf(script, sizeof(script), "delete table inet %s", name);
	return run_nft(script, err);
}

/* ---- fs.pipe-max-size ------------------------------------------------- */

static struct vy_kparam pipe_param = VY_KPARAM_INIT("fs.pipe-max-size", PIPE_SYSCTL, LEASE_DIR,
						    VY_PIPE_SIZE_NEEDED, VY_PIPE_SIZE_RAISED);

static bool have_cap_sys_resource(void)
{
	char *text = NULL;
	bool cap = false;
	if (vy_read_file("/proc/self/status", 1u << 16, &text, NULL, NULL) == 0) {
		const char *c = strstr(text, "CapEff:");
		cap = c && ((strtoull(c + 7, NULL, 16) >> 24) & 1);
	}
	free(text);
	return cap;
}

int vy_pipe_size_acquire(int64_t *was, int64_t *now, bool *raised, vy_error *err)
{
	if (have_cap_sys_resource()) {
		*raised = false;
		*was = *now = vy_kparam_read(&pipe_param);
		return 0; /* CRIU may exceed the limit itself */
	}
	return vy_kparam_acquire(&pipe_param, was, now, raised, err);
}

void vy_pipe_size_release(void)
{
	if (!have_cap_sys_resource())
		vy_kparam_release(&pipe_param);
}

void vy_pipe_size_sweep(void)
{
	vy_kparam_sweep(&pipe_param);
}
