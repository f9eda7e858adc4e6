/*
 * maphold: keeps files mapped, for the tests of what a jit migration sends
 * before the freeze.  Built with gcc -static -O2.
 *
 *   maphold FILE:MODE...
 *     MODE private   PROT_READ, MAP_PRIVATE (as a library's text)
 *          shared    PROT_READ | PROT_WRITE, MAP_SHARED, opened O_RDWR
 *
 * Each file is mapped whole and its descriptor closed, so that the mapping
 * is all /proc/PID shows of it; every page is read once.  Then it sleeps
 * until SIGTERM or SIGINT (exit 0).  Before the sleep it writes
 * "mapped N\n" to stdout.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
	for (int i = 1; i < argc; i++) {
		char *mode = strrchr(argv[i], ':');
		if (!mode || (strcmp(mode, ":private") && strcmp(mode, ":shared"))) {
			fprintf(stderr, "usage: maphold FILE:private|shared...\n");
			return 2;
		}
		*mode++ = '\0';
		int shared = !strcmp(mode, "shared");
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
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("mapped %d\n", argc - 1);
	fflush(stdout);
	while (!stop)
		pause();
	return 0;
}
