/* channel.h - the authenticated link between two agents.
 *
 * TCP carrying TLS 1.3 (OpenSSL) keyed by the cluster secret as an external
 * pre-shared key, with (EC)DHE for forward secrecy.  The client proves it
 * holds the key with the PSK binder, the server with its Finished message;
 * a peer with the wrong key, or that does not speak TLS, fails the handshake
 * and learns nothing.  Frames on the channel are those of wire.h.
 */
#ifndef VY_CHANNEL_H
#define VY_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "error.h"
#include "key.h" /* VY_KEY_LEN, vy_key_load(), vy_key_generate() */
#include "net.h" /* VY_DEFAULT_PORT, vy_parse_hostport() */
#include "wire.h"

typedef struct vy_channel vy_channel;

struct vy_message {
	uint16_t type;
	uint32_t length;
	uint8_t *payload; /* malloc'd, NUL-terminated for convenience (length excludes it) */
};

/* Listening socket (O_CLOEXEC, SO_REUSEADDR); see vy_net_listen(). */
int vy_channel_listen(const char *spec, int *fd_out, vy_error *err);

/* Connect with a timeout, then TLS handshake as client. */
int vy_channel_connect(const char *spec, const uint8_t key[VY_KEY_LEN],
		       int timeout_ms, vy_channel **out, vy_error *err);

/* Take an accepted TCP fd and complete the TLS handshake as server.  On
 * failure the fd is closed and err says why (wrong key, not TLS, ...). */
int vy_channel_accept(int fd, const uint8_t key[VY_KEY_LEN], int timeout_ms,
		      vy_channel **out, vy_error *err);

/* TLS handshake as client over an already-connected socket (tests use a
 * socketpair).  Takes ownership of fd. */
int vy_channel_client_fd(int fd, const uint8_t key[VY_KEY_LEN], int timeout_ms,
			 vy_channel **out, vy_error *err);

/* Set a receive/send timeout for subsequent I/O (0 = none). */
int vy_channel_set_timeout(vy_channel *ch, int timeout_ms, vy_error *err);

int vy_channel_send(vy_channel *ch, uint16_t type, const void *payload,
		    size_t len, vy_error *err);
int vy_channel_send_json(vy_channel *ch, uint16_t type, json_object *obj,
			 vy_error *err);
/* Send ERROR {"phase", "error"}: best effort, the peer may be gone. */
void vy_channel_send_error(vy_channel *ch, const char *phase, const char *msg);
/* Send a DATA frame: header + 16-byte data prefix + bytes, without copying
 * the bytes into a second buffer where avoidable. */
int vy_channel_send_data(vy_channel *ch, uint32_t stream, uint32_t entry,
			 uint64_t offset, const void *data, size_t len,
			 vy_error *err);

/* Receive one frame.  msg->payload must be released with
 * vy_message_free().  EOF from the peer is an error with code ECONNRESET. */
int vy_channel_recv(vy_channel *ch, struct vy_message *msg, vy_error *err);
/* Receive and require a given type; a VY_MSG_ERROR from the peer becomes
 * an error carrying the peer's message. */
int vy_channel_expect(vy_channel *ch, uint16_t type, struct vy_message *msg,
		      vy_error *err);
/* Parse a JSON payload (bounded by the frame length). */
int vy_message_json(const struct vy_message *msg, json_object **out,
		    vy_error *err);
void vy_message_free(struct vy_message *msg);

/* Payload bytes sent and received on this channel so far. */
uint64_t vy_channel_bytes_sent(const vy_channel *ch);
uint64_t vy_channel_bytes_received(const vy_channel *ch);
const char *vy_channel_peer(const vy_channel *ch);
int vy_channel_fd(const vy_channel *ch);
void vy_channel_close(vy_channel *ch);

#endif
