/* key.h - the cluster key file.
 *
 * Every agent of a cluster holds the same 32-byte secret; the channel
 * (channel.h) turns it into a TLS 1.3 pre-shared key.  On disk it is 64 hex
 * digits and a newline, in a file only its owner may read.
 */
#ifndef VY_KEY_H
#define VY_KEY_H

#include <stdint.h>

#include "error.h"

#define VY_KEY_LEN 32

/* Read a key file: 64 hex characters (optionally followed by a newline).
 * Refuses a file readable by group or others. */
int vy_key_load(const char *path, uint8_t key[VY_KEY_LEN], vy_error *err);
/* Write a fresh random key, mode 0600, refusing to overwrite. */
int vy_key_generate(const char *path, vy_error *err);

#endif
