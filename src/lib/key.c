/* key.c - loading and generating the cluster key file.
 *
 * The key is the only thing that authenticates one agent to another, so
 * this file is strict: a key file must be a regular file that nobody but
 * its owner can read, hold exactly 64 hex digits, and a new one is never
 * written over an old one.  Key bytes are wiped from memory after use.
 */
#include "key.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "cleanup.h"

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode exactly 2*VY_KEY_LEN hex digits followed by nothing but
 * whitespace. */
static int decode_key_text(const char *path, const char *text, size_t len,
			   uint8_t key[VY_KEY_LEN], vy_error *err)
{
	size_t digits = 0;
	while (digits < len && hex_value(text[digits]) >= 0)
		digits++;
	size_t rest = digits;
	while (rest < len && isspace((unsigned char)text[rest]))
		rest++;
	if (rest != len)
		return vy_error_set(err, EINVAL,
				   "key file %s: unexpected character at "
				   "offset %zu (expected %d hex digits)",
				   path, rest, 2 * VY_KEY_LEN);
	if (digits != 2 * VY_KEY_LEN)
		return vy_error_set(err, EINVAL,
				   "key file %s: found %zu hex digits, expected "
				   "%d (a 32-byte key)",
				   path, digits, 2 * VY_KEY_LEN);
	for (size_t i = 0; i < VY_KEY_LEN; i++)
		key[i] = (uint8_t)(hex_value(text[2 * i]) << 4 |
				   hex_value(text[2 * i + 1]));
	return 0;
}

int vy_key_load(const char *path, uint8_t key[VY_KEY_LEN], vy_error *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vy_error_sys(err, errno, "opening key file %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return vy_error_sys(err, errno, "stat key file %s", path);
	if (!S_ISREG(st.st_mode))
		return vy_error_set(err, EINVAL, "key file %s is not a regular "
						 "file",
				   path);
	/* A key others can read is a key others hold: refuse it rather than
	 * run a cluster whose secret is not secret. */
	if (st.st_mode & 077)
		return vy_error_set(err, EPERM,
				   "key file %s has mode %04o, readable by group "
				   "or others; run: chmod 600 %s",
				   path, (unsigned)(st.st_mode & 07777), path);

	char text[4 * VY_KEY_LEN]; /* room for the key and generous slack */
	ssize_t n;
	do
		n = read(fd, text, sizeof(text));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return vy_error_sys(err, errno, "reading key file %s", path);
	int rc;
	if ((size_t)n == sizeof(text))
		rc = vy_error_set(err, EINVAL, "key file %s is too long for a "
					       "%d-byte key",
				  path, VY_KEY_LEN);
	else
		rc = decode_key_text(path, text, (size_t)n, key, err);
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}

/* mkdir -p for the directory that will hold the key; new levels are 0700
 * because they hold a secret. */
static int make_key_directory(const char *path, vy_error *err)
{
	cleanup_free char *dir = strdup(path);
	if (!dir)
		return vy_error_sys(err, ENOMEM, "copying path");
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; ; p++) {
		bool last = *p == '\0';
		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return vy_error_sys(err, errno, "creating directory %s",
					    dir);
		if (last)
			return 0;
		*p = '/';
	}
}

static int write_key_file(int fd, const char *path, vy_error *err)
{
	uint8_t key[VY_KEY_LEN];
	char text[2 * VY_KEY_LEN + 1];
	int rc = 0;
	if (RAND_bytes(key, sizeof(key)) != 1) {
		rc = vy_error_set(err, EIO, "generating a random key: %s",
				  ERR_reason_error_string(ERR_get_error()));
	} else {
		for (size_t i = 0; i < VY_KEY_LEN; i++)
			snprintf(text + 2 * i, 3, "%02x", key[i]);
		text[2 * VY_KEY_LEN] = '\n';
		ssize_t n = write(fd, text, sizeof(text));
		if (n != (ssize_t)sizeof(text))
			rc = vy_error_sys(err, n < 0 ? errno : EIO,
					  "writing key file %s", path);
		else if (fsync(fd) < 0)
			rc = vy_error_sys(err, errno, "fsync key file %s", path);
	}
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}

int vy_key_generate(const char *path, vy_error *err)
{
	if (make_key_directory(path, err) < 0)
		return vy_error_wrap(err, "generating key %s", path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		      0600);
	if (fd < 0 && errno == EEXIST)
		return vy_error_set(err, EEXIST,
				   "key file %s already exists; refusing to "
				   "overwrite it (every agent holding the old "
				   "key would be locked out)",
				   path);
	if (fd < 0)
		return vy_error_sys(err, errno, "creating key file %s", path);
	int rc = write_key_file(fd, path, err);
	if (close(fd) < 0 && rc == 0)
		rc = vy_error_sys(err, errno, "closing key file %s", path);
	/* A half-written key must not be mistaken for a key later. */
	if (rc < 0)
		unlink(path);
	return rc;
}
