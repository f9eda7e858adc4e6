/*
 * counter: a tiny workload that proves a container kept running across a
 * migration.  Run it as PID 1 of a container (built with gcc -static -O2).
 *
 * It keeps a counter in memory (0 at start, +1 every 10 ms) and a random
 * 64-bit "incarnation" token chosen at start.  Every 100 ms it writes
 * "TOKEN COUNTER\n" (token as 16 hex digits, counter in decimal) to
 * DIR/counter atomically (write DIR/.counter.tmp, then rename).  At start it
 * also creates DIR/token, DIR/hello.txt and DIR/sub/file.txt.
 *
 * After a migration the token must be unchanged (same process, not a
 * restart) and the counter greater than before the freeze.
 *
 * SIGTERM or SIGINT: exit 0.  Usage: counter [DIR]   (default /data)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static int write_file(const char *dir, const char *name, const char *text)
{
	char tmp[4096], path[4096];
	size_t len = strlen(text);
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	return rename(tmp, path);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/data";
	struct sigaction sa;
	struct timespec next;
	uint64_t token = 0, counter = 0;
	char buf[128], sub[4096];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	while (token == 0) {
		if (getrandom(&token, sizeof(token), 0) != sizeof(token)) {
			/* No getrandom: fall back to time and pid. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			token = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^
				((uint64_t)getpid() << 16) ^ 0x9e3779b97f4a7c15ULL;
		}
	}

	mkdir(dir, 0755);
	snprintf(buf, sizeof(buf), "%016" PRIx64 "\n", token);
	if (write_file(dir, "token", buf) < 0) {
		fprintf(stderr, "counter: cannot write in %s: %s\n", dir, strerror(errno));
		return 1;
	}
	write_file(dir, "hello.txt", "hello from counter\n");
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	mkdir(sub, 0755);
	write_file(sub, "file.txt", "a file in a subdirectory\n");

	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!stop) {
		if (counter % 10 == 0) {
			snprintf(buf, sizeof(buf), "%016" PRIx64 " %" PRIu64 "\n", token, counter);
			write_file(dir, "counter", buf);
		}
		/* Absolute deadlines; after a long freeze, do not race to catch up. */
		next.tv_nsec += 10 * 1000 * 1000;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		{
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > next.tv_sec + 1)
				next = now;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR && !stop)
			;
		counter++;
	}
	return 0;
}
