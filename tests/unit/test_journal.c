/* test_journal.c - the crash-safe migration journal, and the control
 * socket's line framing. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "journal.h"
#include "unit.h"
#include "util.h"

static char tmp[64];

static void test_phases_persist(void)
{
	struct vy_journal *j = NULL;
	CHECK(vy_journal_create(tmp, "0123456789abcdef", "source", "ctr", "10.0.0.2", &j, NULL) == 0);
	if (!j)
		return;
	CHECK(vy_journal_phase(j, "preflight", NULL) == 0);
	vy_journal_set(j, "decision", json_object_new_string("committed"));
	CHECK(vy_journal_phase(j, "checkpoint", NULL) == 0);
	/* what is on disk now is what a restarted agent would read */
	json_object *o = NULL;
	CHECK(vy_journal_load(tmp, "0123456789abcdef", &o, NULL) == 0);
	CHECK(!strcmp(vy_json_str(o, "phase", ""), "checkpoint"));
	CHECK(!strcmp(vy_json_str(o, "decision", ""), "committed"));
	CHECK(json_object_array_length(json_object_object_get(o, "phases")) == 2);
	CHECK(json_object_object_get(o, "result") == NULL);
	json_object_put(o);
	CHECK(vy_journal_finish(j, "migrated", NULL, NULL) == 0);
	CHECK(vy_journal_load(tmp, "0123456789abcdef", &o, NULL) == 0);
	CHECK(!strcmp(vy_json_str(o, "result", ""), "migrated"));
	json_object_put(o);
	vy_journal_free(j);
}

static void test_ids_and_listing(void)
{
	vy_error err;
	struct vy_journal *j = NULL;
	CHECK(vy_journal_create(tmp, "../../etc/passwd", "source", "c", "", &j, &err) < 0);
	CHECK(vy_journal_create(tmp, "0123456789ABCDEF", "source", "c", "", &j, &err) < 0);
	json_object *o = NULL;
	CHECK(vy_journal_load(tmp, "../x", &o, &err) < 0);
	CHECK(vy_journal_load(tmp, "ffffffffffffffff", &o, &err) < 0);
	CHECK(vy_journal_create(tmp, "aaaaaaaaaaaaaaaa", "target", "c2", "", &j, NULL) == 0);
	vy_journal_phase(j, "receiving", NULL);
	vy_journal_free(j);
	/* a corrupt journal is skipped by the listing, refused by load */
	char path[128];
	snprintf(path, sizeof(path), "%s/journal/bbbbbbbbbbbbbbbb.json", tmp);
	FILE *f = fopen(path, "w");
	fputs("{ truncated", f);
	fclose(f);
	CHECK(vy_journal_load(tmp, "bbbbbbbbbbbbbbbb", &o, &err) < 0);
	json_object *all = NULL;
	CHECK(vy_journal_load_all(tmp, &all, NULL) == 0);
	CHECK(all && json_object_array_length(all) == 2);
	json_object_put(all);
}

static void test_control_lines(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	json_object *o = json_object_new_object();
	json_object_object_add(o, "cmd", json_object_new_string("list"));
	CHECK(vy_control_send(sv[0], o, NULL) == 0);
	CHECK(vy_control_send(sv[0], o, NULL) == 0);
	json_object_put(o);
	const char *junk = "[1,2,3]\nnot json\n";
	CHECK(write(sv[0], junk, strlen(junk)) == (ssize_t)strlen(junk));
	shutdown(sv[0], SHUT_WR);
	struct vy_line_reader r;
	vy_line_reader_init(&r, sv[1]);
	json_object *got = NULL;
	vy_error err;
	for (int i = 0; i < 2; i++) {
		CHECK(vy_control_recv(&r, &got, NULL) == 0);
		CHECK(got && !strcmp(vy_json_str(got, "cmd", ""), "list"));
		json_object_put(got);
		got = NULL;
	}
	CHECK(vy_control_recv(&r, &got, &err) < 0); /* an array is not a request */
	CHECK(vy_control_recv(&r, &got, &err) < 0); /* garbage */
	CHECK(vy_control_recv(&r, &got, &err) < 0 && err.code == ECONNRESET);
	vy_line_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
}

static void test_control_oversized(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[1]);
		char buf[65536];
		memset(buf, 'x', sizeof(buf));
		for (size_t sent = 0; sent < VY_CONTROL_MAX_LINE + 2 * sizeof(buf);) {
			ssize_t n = write(sv[0], buf, sizeof(buf));
			if (n <= 0)
				break;
			sent += (size_t)n;
		}
		_exit(0);
	}
	close(sv[0]);
	struct vy_line_reader r;
	vy_line_reader_init(&r, sv[1]);
	json_object *got = NULL;
	vy_error err;
	CHECK(vy_control_recv(&r, &got, &err) < 0 && err.code == E2BIG);
	vy_line_reader_free(&r);
	close(sv[1]);
	waitpid(pid, NULL, 0);
}

static void test_socket_is_private(void)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/run/ctl.sock", tmp);
	int fd = -1, fd2 = -1;
	CHECK(vy_control_listen(path, &fd, NULL) == 0);
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	vy_error err;
	CHECK(vy_control_listen(path, &fd2, &err) < 0); /* a live agent is not replaced */
	CHECK(strstr(err.msg, "already") != NULL);
	close(fd);
	CHECK(vy_control_listen(path, &fd2, NULL) == 0); /* a stale socket is */
	close(fd2);
}

int main(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/vytest-XXXXXX");
	if (!mkdtemp(tmp))
		return 1;
	RUN(test_phases_persist);
	RUN(test_ids_and_listing);
	RUN(test_control_lines);
	RUN(test_control_oversized);
	RUN(test_socket_is_private);
	vy_rm_rf(tmp, NULL);
	return unit_summary();
}
