/*
 * maphold: keeps files mapped, for the tests of what a migration sends
 * before the freeze.  Built with gcc -static -O2.
 *
 *   maphold FILE:MODE...
 *     MODE private   PROT_READ, MAP_PRIVATE (as a library's text)
 *          shared    PROT_READ | PROT_WRITE, MAP_SHARED, opened O_RDWR
 *          stamp     as shared, and written through the mapping only:
 *                    first "00000000" at the start of every 4 KiB slot,
 *                    then every 10 ms K = 1, 2, ... as "%08d" at the start
 *                    of slot K % (size / 4096), so that each slot holds the
 *                    last K that fell on it.  No write(2), no msync: once
 *                    every page is dirty and writable, no stamp moves the
 *                    file's times until writeback cleans its page (on
 *                    tmpfs, never).
 *
 * Each file is mapped whole and its descriptor closed, so that the mapping
 * is all /proc/PID shows of it; every page is read once.  Then it sleeps
 * (or stamps) until SIGTERM or SIGINT (exit 0).  Before that it writes
 * "mapped N\n" to stdout.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	volatile unsigned char sum = 0;
	unsigned char *ring = NULL;
	size_t slots = 0;
	for (int i = 1; i < argc; i++) {
		char *mode = strrchr(argv[i], ':');
		if (!mode || (strcmp(mode, ":private") && strcmp(mode, ":shared") &&
			      strcmp(mode, ":stamp"))) {
			fprintf(stderr, "usage: maphold FILE:private|shared|stamp...\n");
			return 2;
		}
		*mode++ = '\0';
		int stamp = !strcmp(mode, "stamp");
		int shared = stamp || !strcmp(mode, "shared");
		int fd = open(argv[i], (shared ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
			perror(argv[i]);
			return 1;
		}
		unsigned char *p = mmap(NULL, (size_t)st.st_size,
					shared ? PROT_READ | PROT_WRITE : PROT_READ,
					shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		close(fd);
		for (off_t o = 0; o < st.st_size; o += 4096)
			sum += p[o];
		if (stamp && st.st_size >= 4096) {
			ring = p;
			slots = (size_t)st.st_size / 4096;
			for (size_t j = 0; j < slots; j++)
				memcpy(ring + j * 4096, "00000000", 8);
		}
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("mapped %d\n", argc - 1);
	fflush(stdout);
	for (unsigned long k = 1; !stop; k++) {
		if (!ring) {
			pause();
			continue;
		}
		char text[16];
		snprintf(text, sizeof(text), "%08lu", k % 100000000);
		memcpy(ring + (k % slots) * 4096, text, 8);
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}
