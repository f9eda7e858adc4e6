/* jit.c - the agent's half of the federation: serving frozen trees to a
 * target's voyager-fs (source), and running voyager-fs (target).  See
 * jit.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "chunkserve.h"
#include "cleanup.h"
#include "jit.h"
#include "journal.h"
#include "log.h"
#include "util.h"

extern volatile sig_atomic_t vy_stop_requested;

#define SERVE_IDLE_MS (24 * 3600 * 1000) /* a demand lane may idle for long */
#define FS_START_MS 15000
/* voyager-fs --hold-cold: at most this long without word from us */
#define FS_HOLD_COLD "30"

/* ---- source: the trees we serve ---- */

struct served {
	char id[17];
	uint32_t stream;
	int rootfd;
	struct vy_manifest man;
	int refs;         /* connections answering from it */
	bool dropped;     /* released: free at the last reference */
	struct served *next;
};

static pthread_mutex_t serve_lock = PTHREAD_MUTEX_INITIALIZER;
static struct served *served_list;
/* Bytes served per migration, kept after a drop for the journal. */
static struct served_bytes {
	char id[17];
	uint64_t bytes;
} served_bytes[VY_MAX_ACTIVE];

static void served_free(struct served *s)
{
	if (s->rootfd >= 0)
		close(s->rootfd);
	vy_manifest_free(&s->man);
	free(s);
}

/* Unlink s from the list (lock held); free it unless in use. */
static void served_unlink(struct served *s)
{
	for (struct served **p = &served_list; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	s->dropped = true;
	if (!s->refs)
		served_free(s);
}

static void count_bytes(const char *id, uint64_t n)
{
	int free_slot = -1;
	for (int i = 0; i < VY_MAX_ACTIVE; i++) {
		if (!strcmp(served_bytes[i].id, id)) {
			served_bytes[i].bytes += n;
			return;
		}
		if (!served_bytes[i].id[0] && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		free_slot = (int)(vy_now_ms() % VY_MAX_ACTIVE);
	snprintf(served_bytes[free_slot].id, sizeof(served_bytes[free_slot].id), "%s", id);
	served_bytes[free_slot].bytes = n;
}

json_object *vy_serve_list(void)
{
	json_object *by_id = json_object_new_object(), *arr = json_object_new_array();
	pthread_mutex_lock(&serve_lock);
	for (struct served *s = served_list; s; s = s->next) {
		json_object *o = json_object_object_get(by_id, s->id);
		if (!o) {
			o = json_object_new_object();
			json_object_object_add(o, "id", json_object_new_string(s->id));
			json_object_object_add(o, "trees", json_object_new_int(0));
			json_object_object_add(o, "connections", json_object_new_int(0));
			json_object_object_add(by_id, s->id, o);
			json_object_array_add(arr, json_object_get(o));
		}
		json_object_object_add(o, "trees", json_object_new_int(
			json_object_get_int(json_object_object_get(o, "trees")) + 1));
		json_object_object_add(o, "connections", json_object_new_int(
			json_object_get_int(json_object_object_get(o, "connections")) + s->refs));
	}
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *o = json_object_array_get_idx(arr, i);
		uint64_t n = 0;
		for (int k = 0; k < VY_MAX_ACTIVE; k++)
			if (!strcmp(served_bytes[k].id, vy_json_str(o, "id", "")))
				n = served_bytes[k].bytes;
		json_object_object_add(o, "bytes_served", json_object_new_int64((int64_t)n));
	}
	pthread_mutex_unlock(&serve_lock);
	json_object_put(by_id);
	return arr;
}

uint64_t vy_serve_bytes(const char *id)
{
	uint64_t n = 0;
	pthread_mutex_lock(&serve_lock);
	for (int i = 0; i < VY_MAX_ACTIVE; i++)
		if (!strcmp(served_bytes[i].id, id))
			n = served_bytes[i].bytes;
	pthread_mutex_unlock(&serve_lock);
	return n;
}

void vy_serve_manifest_path(const char *dir, uint32_t stream, char *out, size_t len)
{
	snprintf(out, len, "%s/serve-%u.manifest", dir, stream);
}

int vy_serve_add(const char *id, uint32_t stream, const char *root_path,
		 struct vy_manifest *man, vy_error *err)
{
	int rc = 0;
	struct served *s = calloc(1, sizeof(*s));
	if (!s) {
		vy_manifest_free(man);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	snprintf(s->id, sizeof(s->id), "%s", id);
	s->stream = stream;
	s->man = *man;
	*man = (struct vy_manifest){ 0 };
	s->rootfd = open(root_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->rootfd < 0) {
		rc = vy_error_sys(err, errno, "open %s", root_path);
		served_free(s);
		return rc;
	}
	pthread_mutex_lock(&serve_lock);
	for (struct served *o = served_list; o; o = o->next)
		if (!strcmp(o->id, id) && o->stream == stream) {
			served_unlink(o);
			break;
		}
	s->next = served_list;
	served_list = s;
	pthread_mutex_unlock(&serve_lock);
	return 0;
}

int vy_serve_persist(const char *id, const char *dir, vy_error *err)
{
	int rc = 0;
	pthread_mutex_lock(&serve_lock);
	for (struct served *s = served_list; rc == 0 && s; s = s->next) {
		if (strcmp(s->id, id) != 0)
			continue;
		char path[PATH_MAX + 32];
		cleanup_free uint8_t *buf = NULL;
		size_t len = 0;
		vy_serve_manifest_path(dir, s->stream, path, sizeof(path));
		rc = vy_manifest_encode(&s->man, &buf, &len, err);
		if (rc == 0)
			rc = vy_write_file_atomic(path, buf, len, 0600, err);
	}
	pthread_mutex_unlock(&serve_lock);
	return rc;
}

void vy_serve_drop(const char *id)
{
	pthread_mutex_lock(&serve_lock);
	for (struct served *s = served_list, *next; s; s = next) {
		next = s->next;
		if (!strcmp(s->id, id))
			served_unlink(s);
	}
	pthread_mutex_unlock(&serve_lock);
}

static void send_error(vy_channel *ch, const char *msg)
{
	vy_channel_send_error(ch, "fetch", msg);
}

void vy_serve_session(struct vy_daemon *d, vy_channel *ch, json_object *body)
{
	(void)d;
	const char *id = vy_json_str(body, "migration", "");
	int64_t stream = vy_json_int(body, "stream", -1);
	char msg[256];
	if (!vy_journal_id_is_valid(id) || stream < 0 || stream > UINT32_MAX) {
		send_error(ch, "malformed FETCH_OPEN");
		return;
	}
	struct served *s;
	pthread_mutex_lock(&serve_lock);
	for (s = served_list; s; s = s->next)
		if (!strcmp(s->id, id) && s->stream == (uint32_t)stream)
			break;
	if (s)
		s->refs++;
	pthread_mutex_unlock(&serve_lock);
	if (!s) {
		snprintf(msg, sizeof(msg), "tree %lld of migration %s is not served here "
			 "(unknown, or already released)", (long long)stream, id);
		vy_warn("%s: %s", vy_channel_peer(ch), msg);
		send_error(ch, msg);
		return;
	}
	uint64_t bytes = 0;
	vy_error err;
	json_object *ok = json_object_new_object();
	if (vy_channel_send_json(ch, VY_MSG_ACK, ok, &err) == 0 &&
	    vy_channel_set_timeout(ch, SERVE_IDLE_MS, &err) == 0 &&
	    vy_chunk_serve(ch, s->stream, s->rootfd, &s->man, &bytes, &err) < 0)
		vy_warn("migration %s: serving tree %u to %s: %s", id, s->stream,
			vy_channel_peer(ch), err.msg);
	json_object_put(ok);
	pthread_mutex_lock(&serve_lock);
	count_bytes(id, bytes);
	if (--s->refs == 0 && s->dropped)
		served_free(s);
	pthread_mutex_unlock(&serve_lock);
}

void vy_jit_delete_ours(struct vy_daemon *d, const char *container, const char *bundle,
			const char *mig_dir)
{
	vy_error err;
	if (mig_dir && mig_dir[0] && vy_rm_rf(mig_dir, &err) < 0)
		vy_warn("%s", err.msg);
	char ours[PATH_MAX];
	snprintf(ours, sizeof(ours), "%s/containers/%s/bundle", d->state_dir, container);
	if (!bundle || strcmp(bundle, ours) != 0)
		return; /* an operator's bundle stays where it was */
	snprintf(ours, sizeof(ours), "%s/containers/%s", d->state_dir, container);
	vy_fs_unmount_under(ours);
	if (vy_rm_rf(ours, &err) < 0)
		vy_warn("%s", err.msg);
}

void vy_serve_release(struct vy_daemon *d, vy_channel *ch, json_object *body)
{
	const char *id = vy_json_str(body, "id", "");
	json_object *j = NULL;
	vy_error err;
	char msg[VY_ERROR_MSG_MAX + 64] = "";
	/* The migration's own thread writes its journal one last time as it
	 * ends; a target that hydrated fast must not race that write. */
	for (int i = 0; i < 600 && vy_journal_id_is_valid(id) && vy_active_has_id(id); i++)
		usleep(100 * 1000);
	if (!vy_journal_id_is_valid(id) || vy_journal_load(d->state_dir, id, &j, &err) < 0)
		snprintf(msg, sizeof(msg), "unknown migration '%.20s'", id);
	else if (strcmp(vy_json_str(j, "role", ""), "source") != 0 ||
		 strcmp(vy_json_str(j, "mode", ""), "jit") != 0 ||
		 strcmp(vy_json_str(j, "decision", ""), "committed") != 0)
		snprintf(msg, sizeof(msg), "migration %s is not a committed jit migration from "
			 "this host", id);
	if (msg[0]) {
		vy_warn("RELEASE from %s refused: %s", vy_channel_peer(ch), msg);
		send_error(ch, msg);
		json_object_put(j);
		return;
	}
	if (!json_object_get_boolean(json_object_object_get(j, "released"))) {
		vy_serve_drop(id);
		vy_jit_delete_ours(d, vy_json_str(j, "container", ""), vy_json_str(j, "bundle", ""),
				   vy_json_str(j, "source_dir", ""));
		struct vy_journal *jr;
		int rc = vy_journal_adopt(d->state_dir, json_object_get(j), &jr, &err);
		if (rc == 0) {
			vy_journal_set(jr, "released", json_object_new_boolean(1));
			vy_journal_set(jr, "released_ms", json_object_new_int64((int64_t)vy_wall_ms()));
			vy_journal_set(jr, "served_bytes",
				       json_object_new_int64((int64_t)vy_serve_bytes(id)));
			rc = vy_journal_save(jr, &err);
			vy_journal_free(jr);
		}
		if (rc < 0)
			vy_warn("migration %s: cannot record the release: %s", id, err.msg);
		vy_info("migration %s: the target holds every byte of %s; released our copy", id,
			vy_json_str(j, "container", ""));
	}
	json_object *ok = json_object_new_object();
	json_object_object_add(ok, "id", json_object_new_string(id));
	vy_channel_send_json(ch, VY_MSG_ACK, ok, NULL);
	json_object_put(ok);
	json_object_put(j);
}

int vy_serve_recover(struct vy_daemon *d, json_object *j, vy_error *err)
{
	(void)d;
	const char *id = vy_json_str(j, "id", "");
	json_object *arr = json_object_object_get(j, "serve");
	for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
		json_object *t = json_object_array_get_idx(arr, i);
		const char *root = vy_json_str(t, "root", "");
		const char *mpath = vy_json_str(t, "manifest", "");
		cleanup_free char *buf = NULL;
		size_t len = 0;
		struct vy_manifest man = { 0 };
		if (vy_read_file(mpath, (size_t)2 << 30, &buf, &len, err) < 0 ||
		    vy_manifest_decode((const uint8_t *)buf, len, &man, err) < 0 ||
		    vy_serve_add(id, (uint32_t)vy_json_int(t, "stream", 0), root, &man, err) < 0) {
			vy_manifest_free(&man);
			return vy_error_wrap(err, "serve migration %s again", id);
		}
	}
	return 0;
}

/* ---- target: voyager-fs processes ---- */

int vy_fs_binary(char *out, size_t len, vy_error *err)
{
	const char *env = getenv("VOYAGER_FS");
	if (env && env[0]) {
		if (access(env, X_OK) < 0)
			return vy_error_sys(err, errno, "VOYAGER_FS=%s", env);
		snprintf(out, len, "%s", env);
		return 0;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			static const char *const rel[] = { "voyager-fs", "../fs/voyager-fs" };
			for (size_t i = 0; i < 2; i++) {
				char p[PATH_MAX + 32];
				snprintf(p, sizeof(p), "%s/%s", exe, rel[i]);
				if (access(p, X_OK) == 0 && realpath(p, out)) /* out is PATH_MAX */
					return 0;
			}
		}
	}
	if (vy_find_executable("voyager-fs", out, len) == 0)
		return 0;
	return vy_error_set(err, ENOENT, "voyager-fs is not installed on this host (looked next "
			    "to voyagerd and in PATH; install it, set VOYAGER_FS to name it, or "
			    "migrate with --mode presync)");
}

void vy_fs_release_cold(const struct vy_fs_mount *fm)
{
	if (setxattr(fm->mountpoint, "user.voyager.hydrate_cold", "1", 1, 0) < 0)
		vy_warn("voyager-fs on %s: cannot end its hold on cold files (%s); it ends "
			"by itself within %s s", fm->mountpoint, strerror(errno), FS_HOLD_COLD);
}

json_object *vy_fs_status(const char *mountpoint)
{
	char buf[8192];
	ssize_t n = getxattr(mountpoint, "user.voyager.status", buf, sizeof(buf) - 1);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	json_object *o = json_tokener_parse(buf);
	if (o && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = NULL;
	}
	return o;
}

/* Start voyager-fs for fm; staged: with --wait-fd, its end of a socket
 * pair in fm->ctl. */
static int fs_spawn(struct vy_daemon *d, const char *id, const char *source,
		    uint64_t hydrate_rate, struct vy_fs_mount *fm, bool staged, vy_error *err)
{
	char bin[PATH_MAX], stream[16], rate[32];
	if (vy_fs_binary(bin, sizeof(bin), err) < 0)
		return -1;
	snprintf(stream, sizeof(stream), "%u", fm->stream);
	snprintf(rate, sizeof(rate), "%llu", (unsigned long long)hydrate_rate);
	char *argv[32];
	int n = 0;
	argv[n++] = bin;
	argv[n++] = "--backing", argv[n++] = fm->backing;
	argv[n++] = "--state", argv[n++] = fm->state;
	argv[n++] = "--manifest", argv[n++] = fm->manifest;
	argv[n++] = "--source", argv[n++] = (char *)source;
	argv[n++] = "--key", argv[n++] = d->key_path;
	argv[n++] = "--stream", argv[n++] = stream;
	argv[n++] = "--migration", argv[n++] = (char *)id;
	if (fm->delta[0])
		argv[n++] = "--delta", argv[n++] = fm->delta;
	if (staged)
		argv[n++] = "--wait-fd", argv[n++] = "3";
	argv[n++] = "--hold-cold", argv[n++] = FS_HOLD_COLD;
	if (fm->priority[0])
		argv[n++] = "--priority", argv[n++] = fm->priority;
	if (fm->present[0])
		argv[n++] = "--present", argv[n++] = fm->present;
	if (hydrate_rate)
		argv[n++] = "--hydrate-rate", argv[n++] = rate;
	argv[n++] = fm->mountpoint;
	argv[n] = NULL;
	if (vy_mkdir_p(fm->mountpoint, 0755, err) < 0)
		return -1;
	int sv[2] = { -1, -1 };
	if (staged && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return vy_error_sys(err, errno, "socketpair");
	int logfd = open(fm->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0) {
		vy_error_sys(err, errno, "open %s", fm->log);
		goto fail;
	}
	pid_t pid = fork();
	if (pid < 0) {
		vy_error_sys(err, errno, "fork");
		goto fail;
	}
	if (pid == 0) {
		/* Its own session: it must outlive voyagerd. */
		setsid();
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
		if (staged && sv[1] != 3)
			dup2(sv[1], 3); /* dup2 clears close-on-exec */
		else if (staged)
			fcntl(3, F_SETFD, 0);
		closefrom(staged ? 4 : 3);
		signal(SIGPIPE, SIG_DFL);
		execv(bin, argv);
		_exit(127);
	}
	close(logfd);
	if (staged) {
		close(sv[1]);
		fm->ctl = sv[0];
	}
	fm->pid = pid;
	return 0;
fail:
	if (logfd >= 0)
		close(logfd);
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	return -1;
}

static int fs_exited(struct vy_fs_mount *fm, vy_error *err)
{
	int st;
	if (waitpid(fm->pid, &st, WNOHANG) != fm->pid)
		return 0;
	fm->pid = 0;
	cleanup_free char *tail = vy_file_tail(fm->log, 5);
	return vy_error_set(err, EIO, "voyager-fs for %s exited at start: %s", fm->mountpoint,
			    tail ? tail : "(no log)");
}

/* Until the mount answers.  This wait is inside the freeze: look often at
 * first (a start takes 10 to 100 ms, with the tree's size), then every
 * 20 ms. */
static int fs_wait_mounted(struct vy_fs_mount *fm, const char *id, vy_error *err)
{
	uint64_t start = fm->staged && fm->t_go ? fm->t_go : vy_now_ms();
	for (int polls = 0; vy_now_ms() - start < FS_START_MS; polls++) {
		if (fs_exited(fm, err) < 0)
			return -1;
		json_object *s = vy_fs_status(fm->mountpoint);
		if (s) {
			json_object_put(s);
			vy_info("migration %s: voyager-fs (pid %d) serves %s, %llu ms after %s",
				id, (int)fm->pid, fm->mountpoint,
				(unsigned long long)(vy_now_ms() - start),
				fm->staged ? "the go" : "its start");
			fm->staged = false;
			return 0;
		}
		usleep(polls < 250 ? 2000 : 20000);
	}
	vy_fs_stop(fm);
	return vy_error_set(err, ETIMEDOUT, "voyager-fs did not mount %s within %d s (log %s)",
			    fm->mountpoint, FS_START_MS / 1000, fm->log);
}

int vy_fs_start(struct vy_daemon *d, const char *id, const char *source,
		uint64_t hydrate_rate, struct vy_fs_mount *fm, vy_error *err)
{
	fm->staged = false;
	fm->ctl = -1;
	if (fs_spawn(d, id, source, hydrate_rate, fm, false, err) < 0)
		return -1;
	return fs_wait_mounted(fm, id, err);
}

int vy_fs_prestart(struct vy_daemon *d, const char *id, const char *source,
		   uint64_t hydrate_rate, struct vy_fs_mount *fm, vy_error *err)
{
	fm->ctl = -1;
	if (fs_spawn(d, id, source, hydrate_rate, fm, true, err) < 0)
		return -1;
	fm->staged = true;
	/* It reads the manifest and every directory holding files: seconds,
	 * for a large tree, all of it before the freeze. */
	uint64_t start = vy_now_ms();
	char line[8];
	size_t n = 0;
	while (n < sizeof(line) - 1) {
		struct pollfd p = { fm->ctl, POLLIN, 0 };
		if (vy_now_ms() - start > 10 * FS_START_MS) {
			vy_fs_stop(fm);
			return vy_error_set(err, ETIMEDOUT, "voyager-fs for %s was not ready "
					    "within %d s (log %s)", fm->mountpoint,
					    10 * FS_START_MS / 1000, fm->log);
		}
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t r = read(fm->ctl, line + n, 1);
		if (r <= 0) {
			if (fs_exited(fm, err) == 0) {
				usleep(20000);
				if (fs_exited(fm, err) == 0)
					vy_error_set(err, EIO, "voyager-fs for %s closed its control "
						     "socket (log %s)", fm->mountpoint, fm->log);
			}
			vy_fs_stop(fm);
			return -1;
		}
		if (line[n++] == '\n')
			break;
	}
	line[n] = '\0';
	if (strcmp(line, "ready\n")) {
		vy_fs_stop(fm);
		return vy_error_set(err, EPROTO, "voyager-fs for %s said '%.6s', not ready",
				    fm->mountpoint, line);
	}
	vy_info("migration %s: voyager-fs (pid %d) for %s is ready, %llu ms after its start",
		id, (int)fm->pid, fm->mountpoint, (unsigned long long)(vy_now_ms() - start));
	return 0;
}

int vy_fs_go_send(struct vy_fs_mount *fm, vy_error *err)
{
	static const char go[] = "go\n";
	if (!fm->staged || fm->ctl < 0)
		return vy_error_set(err, EINVAL, "voyager-fs for %s is not waiting", fm->mountpoint);
	ssize_t w = write(fm->ctl, go, sizeof(go) - 1);
	close(fm->ctl);
	fm->ctl = -1;
	if (w != (ssize_t)sizeof(go) - 1) {
		vy_error_sys(err, errno, "tell voyager-fs for %s to go", fm->mountpoint);
		vy_fs_stop(fm);
		return -1;
	}
	fm->going = true;
	fm->t_go = vy_now_ms();
	return 0;
}

int vy_fs_wait_gone(struct vy_fs_mount *fm, const char *id, vy_error *err)
{
	if (!fm->going)
		return 0;
	fm->going = false;
	return fs_wait_mounted(fm, id, err);
}

static bool is_voyager_fs(pid_t pid)
{
	char path[64], comm[32] = "";
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool yes = fgets(comm, sizeof(comm), f) && !strncmp(comm, "voyager-fs", 10);
	fclose(f);
	return yes;
}

void vy_fs_stop(struct vy_fs_mount *fm)
{
	/* A staged one exits when its control socket closes. */
	if (fm->staged && fm->ctl >= 0) {
		close(fm->ctl);
		fm->ctl = -1;
	}
	fm->staged = false;
	if (umount2(fm->mountpoint, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		vy_warn("unmount %s: %s", fm->mountpoint, strerror(errno));
	if (fm->pid <= 0)
		return;
	/* Unmounted, it exits by itself; a stuck one is told to. */
	for (int i = 0; i < 40 && is_voyager_fs(fm->pid); i++) {
		if (waitpid(fm->pid, NULL, WNOHANG) == fm->pid)
			break;
		if (i == 20)
			kill(fm->pid, SIGTERM);
		usleep(50 * 1000);
	}
	waitpid(fm->pid, NULL, WNOHANG);
	fm->pid = 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

void vy_fs_unmount_under(const char *prefix)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	char line[8192];
	char *mps[64];
	int n = 0;
	while (n < 64 && fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - ");
		if (!sep || strncmp(sep + 3, "fuse.voyager ", 13) != 0)
			continue;
		char *save = NULL, *tok = strtok_r(line, " ", &save);
		for (int field = 0; tok && field < 4; field++)
			tok = strtok_r(NULL, " ", &save);
		if (!tok)
			continue;
		unescape(tok);
		if (vy_path_is_under(tok, prefix) || !strcmp(tok, prefix))
			mps[n++] = strdup(tok);
	}
	fclose(f);
	while (n-- > 0) {
		if (mps[n] && umount2(mps[n], MNT_DETACH) < 0)
			vy_warn("unmount %s: %s", mps[n], strerror(errno));
		free(mps[n]);
	}
}

json_object *vy_fs_to_json(const struct vy_fs_mount *fm)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "stream", json_object_new_int64(fm->stream));
	json_object_object_add(o, "pid", json_object_new_int64(fm->pid));
	json_object_object_add(o, "mountpoint", json_object_new_string(fm->mountpoint));
	json_object_object_add(o, "backing", json_object_new_string(fm->backing));
	json_object_object_add(o, "state", json_object_new_string(fm->state));
	json_object_object_add(o, "manifest", json_object_new_string(fm->manifest));
	json_object_object_add(o, "delta", json_object_new_string(fm->delta));
	json_object_object_add(o, "priority", json_object_new_string(fm->priority));
	json_object_object_add(o, "present", json_object_new_string(fm->present));
	json_object_object_add(o, "log", json_object_new_string(fm->log));
	return o;
}

int vy_fs_from_json(json_object *o, struct vy_fs_mount *fm, vy_error *err)
{
	memset(fm, 0, sizeof(*fm));
	fm->stream = (uint32_t)vy_json_int(o, "stream", 0);
	fm->pid = (pid_t)vy_json_int(o, "pid", 0);
	snprintf(fm->mountpoint, sizeof(fm->mountpoint), "%s", vy_json_str(o, "mountpoint", ""));
	snprintf(fm->backing, sizeof(fm->backing), "%s", vy_json_str(o, "backing", ""));
	snprintf(fm->state, sizeof(fm->state), "%s", vy_json_str(o, "state", ""));
	snprintf(fm->manifest, sizeof(fm->manifest), "%s", vy_json_str(o, "manifest", ""));
	snprintf(fm->delta, sizeof(fm->delta), "%s", vy_json_str(o, "delta", ""));
	fm->ctl = -1;
	snprintf(fm->priority, sizeof(fm->priority), "%s", vy_json_str(o, "priority", ""));
	snprintf(fm->present, sizeof(fm->present), "%s", vy_json_str(o, "present", ""));
	snprintf(fm->log, sizeof(fm->log), "%s", vy_json_str(o, "log", ""));
	if (fm->mountpoint[0] != '/')
		return vy_error_set(err, EINVAL, "journal names no voyager-fs mount point");
	return 0;
}

/* ---- target: hydration until independent ---- */

static bool tell_release(struct vy_daemon *d, const char *source, const char *id, bool *final)
{
	vy_channel *ch;
	vy_error err;
	*final = false;
	if (vy_channel_connect(source, d->key, 3000, &ch, &err) < 0)
		return false;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	struct vy_message msg = { 0 };
	bool ok = false;
	vy_channel_set_timeout(ch, 30000, NULL);
	if (vy_channel_send_json(ch, VY_MSG_RELEASE, o, &err) == 0 &&
	    vy_channel_recv(ch, &msg, &err) == 0) {
		ok = msg.type == VY_MSG_ACK;
		if (msg.type == VY_MSG_ERROR) {
			json_object *e = NULL;
			vy_message_json(&msg, &e, NULL);
			vy_warn("migration %s: the source refused RELEASE: %s", id,
				vy_json_str(e, "error", "?"));
			json_object_put(e);
			*final = true;
		}
	}
	vy_message_free(&msg);
	json_object_put(o);
	vy_channel_close(ch);
	return ok;
}

void vy_jit_hydrate(struct vy_daemon *d, struct vy_journal *j, struct vy_active *act,
		    const char *id, const char *source, struct vy_fs_mount *fs, int nfs)
{
	uint64_t last_b = 0, last_t = vy_now_ms(), t0 = last_t;
	double rate = 0;
	bool warned = false;
	if (act) {
		act->hydrating = true;
		vy_active_phase(act, "hydrating");
	}
	vy_journal_phase(j, "hydrating", NULL);
	json_object *final = NULL;
	while (!vy_stop_requested) {
		bool all = true, up = true;
		uint64_t bt = 0, bp = 0, ft = 0, fc = 0;
		json_object *per = json_object_new_array();
		for (int i = 0; i < nfs; i++) {
			if (fs[i].pid > 0)
				waitpid(fs[i].pid, NULL, WNOHANG); /* reap, if ours */
			json_object *st = vy_fs_status(fs[i].mountpoint);
			if (!st) {
				all = false;
				if (!warned)
					vy_err("migration %s: voyager-fs on %s does not answer (log %s)",
					       id, fs[i].mountpoint, fs[i].log);
				warned = true;
				continue;
			}
			bt += (uint64_t)vy_json_int(st, "bytes_total", 0);
			bp += (uint64_t)vy_json_int(st, "bytes_present", 0);
			ft += (uint64_t)vy_json_int(st, "files_total", 0);
			fc += (uint64_t)vy_json_int(st, "files_complete", 0);
			all = all && json_object_get_boolean(json_object_object_get(st, "independent"));
			up = up && json_object_get_boolean(json_object_object_get(st, "source_up"));
			json_object_array_add(per, st);
		}
		uint64_t now = vy_now_ms();
		if (now > last_t && bp >= last_b) {
			double inst = (double)(bp - last_b) * 1000.0 / (double)(now - last_t);
			rate = rate ? 0.7 * rate + 0.3 * inst : inst;
		}
		last_b = bp;
		last_t = now;
		if (act) {
			act->total_bytes = bt;
			atomic_store(&act->progress.bytes, bp);
			act->files_total = ft;
			act->files_done = fc;
			act->rate_bps = (uint64_t)rate;
			act->eta_s = rate > 1 ? (uint64_t)((double)(bt - bp) / rate) : 0;
			act->source_up = up;
		}
		if (all) {
			final = json_object_new_object();
			json_object_object_add(final, "bytes", json_object_new_int64((int64_t)bp));
			json_object_object_add(final, "files", json_object_new_int64((int64_t)fc));
			json_object_object_add(final, "ms", json_object_new_int64((int64_t)(now - t0)));
			json_object_object_add(final, "trees", per);
			break;
		}
		json_object_put(per);
		usleep(500 * 1000);
	}
	if (!final)
		return; /* stopping: a restarted agent carries on from the journal */
	vy_journal_set(j, "hydration", final);
	vy_journal_phase(j, "independent", NULL);
	vy_info("migration %s: every file is local and durable; releasing the source", id);
	if (act)
		vy_active_phase(act, "releasing");
	for (int attempt = 0; !vy_stop_requested; attempt++) {
		bool fin;
		if (tell_release(d, source, id, &fin) || fin)
			break;
		if (attempt % 10 == 0)
			vy_warn("migration %s: the source %s cannot be told to let go yet; retrying",
				id, source);
		sleep(attempt < 10 ? 1 : 5);
	}
	if (vy_stop_requested)
		return;
	vy_journal_set(j, "released", json_object_new_boolean(1));
	vy_journal_finish(j, "migrated", NULL, NULL);
}
