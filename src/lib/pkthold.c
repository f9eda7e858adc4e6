/* pkthold.c - see pkthold.h. */
#include "pkthold.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "util.h"
#include "wire.h"

#define HOLD_MAX_IFS 4
#define HOLD_MAX_ADDRS 16
#define HOLD_RCVBUF (8 << 20)
#define FRAME_MAX (ETH_HLEN + 65535)

struct hold_addr {
	uint8_t family; /* 4 or 6 */
	uint8_t a[16];
	int iface;      /* index into the interfaces */
};

/* The container's interfaces and addresses, from its identity. */
struct hold_ifaces {
	struct {
		char host_if[IF_NAMESIZE];
		int ifindex;          /* of host_if, on this host */
		unsigned char mac[6]; /* the container's end */
		unsigned mtu;
	} ifs[HOLD_MAX_IFS];
	int nifs;
	struct hold_addr addrs[HOLD_MAX_ADDRS];
	int naddrs;
};

struct vy_hold {
	struct hold_ifaces id;
	int fds[HOLD_MAX_IFS];
	int stop[2];
	pthread_t thread;
	bool running;
	uint8_t *frame;          /* receive buffer, FRAME_MAX */
	uint8_t *seg;            /* one segment of a GSO batch, FRAME_MAX */
	uint8_t *buf;            /* the HELD_PACKETS payload being built */
	size_t len, cap;
	struct vy_hold_stats st;
};

static int parse_mac(const char *s, unsigned char mac[6])
{
	unsigned m[6];
	char tail;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5],
		   &tail) != 6)
		return -1;
	for (int k = 0; k < 6; k++)
		mac[k] = (unsigned char)m[k];
	return 0;
}

static int parse_addr(const char *cidr, struct hold_addr *a)
{
	char ip[64];
	snprintf(ip, sizeof(ip), "%s", cidr);
	char *slash = strchr(ip, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, ip, a->a) == 1)
		a->family = 4;
	else if (inet_pton(AF_INET6, ip, a->a) == 1)
		a->family = 6;
	else
		return -1;
	return 0;
}

static int load_ifaces(json_object *identity, struct hold_ifaces *id, vy_error *err)
{
	json_object *ifs = json_object_object_get(identity, "interfaces");
	memset(id, 0, sizeof(*id));
	size_t n = ifs && json_object_is_type(ifs, json_type_array) ? json_object_array_length(ifs) : 0;
	if (n == 0 || n > HOLD_MAX_IFS)
		return vy_error_set(err, EINVAL, "the container has %zu interfaces (holding "
				    "handles 1 to %d)", n, HOLD_MAX_IFS);
	for (size_t k = 0; k < n; k++) {
		json_object *i = json_object_array_get_idx(ifs, k);
		const char *host_if = vy_json_str(i, "host_if", "");
		int64_t mtu = vy_json_int(i, "mtu", 1500);
		if (!*host_if || strlen(host_if) >= IF_NAMESIZE ||
		    parse_mac(vy_json_str(i, "mac", ""), id->ifs[k].mac) < 0 || mtu < 68 ||
		    mtu > 65535)
			return vy_error_set(err, EINVAL, "interface %zu of the identity has no usable "
					    "host end, MAC or MTU", k);
		snprintf(id->ifs[k].host_if, IF_NAMESIZE, "%s", host_if);
		id->ifs[k].mtu = (unsigned)mtu;
		id->ifs[k].ifindex = (int)if_nametoindex(host_if);
		if (!id->ifs[k].ifindex)
			return vy_error_sys(err, errno, "interface %s", host_if);
		json_object *addrs = json_object_object_get(i, "addrs");
		for (size_t a = 0; addrs && a < json_object_array_length(addrs); a++) {
			if (id->naddrs == HOLD_MAX_ADDRS)
				return vy_error_set(err, E2BIG, "the container has more than %d "
						    "addresses", HOLD_MAX_ADDRS);
			struct hold_addr *ha = &id->addrs[id->naddrs];
			const char *cidr = json_object_get_string(json_object_array_get_idx(addrs, a));
			if (!cidr || parse_addr(cidr, ha) < 0)
				return vy_error_set(err, EINVAL, "address '%.64s' of the identity",
						    cidr ? cidr : "");
			ha->iface = (int)k;
			id->naddrs++;
		}
	}
	id->nifs = (int)n;
	if (id->naddrs == 0)
		return vy_error_set(err, EINVAL, "the container has no address to hold packets for");
	return 0;
}

/* The interface that holds p's destination address, or -1. */
static int iface_of(const struct hold_ifaces *id, const struct vy_held_packet *p)
{
	for (int k = 0; k < id->naddrs; k++)
		if (id->addrs[k].family == p->family &&
		    !memcmp(id->addrs[k].a, p->dst, p->family == 4 ? 4 : 16))
			return id->addrs[k].iface;
	return -1;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (; n > 1; p += 2, n -= 2)
		s += (uint32_t)(p[0] << 8 | p[1]);
	if (n)
		s += (uint32_t)(p[0] << 8);
	return s;
}

/* Compute the TCP or UDP checksum of p in place: the sender's kernel left
 * it to hardware that the frame never met (CHECKSUM_PARTIAL). */
static void fill_checksum(uint8_t *ip, const struct vy_held_packet *p)
{
	size_t hlen = p->family == 4 ? (size_t)(ip[0] & 0x0f) * 4 : 40;
	size_t l4len = p->len - hlen;
	uint8_t *l4 = ip + hlen;
	uint8_t *field = l4 + (p->proto == IPPROTO_TCP ? 16 : 6);
	uint32_t s = 0;
	if (p->family == 4)
		s = sum16(ip + 12, 8, 0);
	else
		s = sum16(ip + 8, 32, 0);
	s += p->proto;
	s += (uint32_t)(l4len >> 16) + (uint32_t)(l4len & 0xffff);
	field[0] = field[1] = 0;
	s = sum16(l4, l4len, s);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	uint16_t c = (uint16_t)~s;
	if (c == 0 && p->proto == IPPROTO_UDP)
		c = 0xffff;
	field[0] = (uint8_t)(c >> 8);
	field[1] = (uint8_t)c;
}

/* Hold one packet (already whole: checksums right), if the bounds allow. */
static void hold_packet(struct vy_hold *h, const uint8_t *ip, size_t len)
{
	if (h->st.packets >= VY_HELD_MAX_PACKETS || h->st.bytes + len > VY_HELD_MAX_BYTES) {
		h->st.dropped++;
		return;
	}
	if (h->len + 2 + len > h->cap) {
		size_t cap = h->cap * 2;
		while (cap < h->len + 2 + len)
			cap *= 2;
		uint8_t *nb = realloc(h->buf, cap);
		if (!nb) {
			h->st.dropped++;
			return;
		}
		h->buf = nb;
		h->cap = cap;
	}
	vy_put_u16(h->buf + h->len, (uint16_t)len);
	memcpy(h->buf + h->len + 2, ip, len);
	h->len += 2 + len;
	h->st.packets++;
	h->st.bytes += len;
}

static void fill_ipv4_checksum(uint8_t *ip)
{
	size_t hlen = (size_t)(ip[0] & 0x0f) * 4;
	ip[10] = ip[11] = 0;
	uint32_t s = sum16(ip, hlen, 0);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	vy_put_u16(ip + 10, (uint16_t)~s);
}

/* A TCP packet longer than the MTU is a batch the sender's kernel left to
 * be cut up (GSO) further on; cut it here into segments that fit, as the
 * hardware would have: consecutive sequence numbers, FIN and PSH on the
 * last only, CWR on the first only, IPv4 ids counting up. */
static void hold_segments(struct vy_hold *h, const uint8_t *ip, const struct vy_held_packet *p,
			  unsigned mtu)
{
	size_t hlen = p->family == 4 ? (size_t)(ip[0] & 0x0f) * 4 : 40;
	size_t thlen = (size_t)(ip[hlen + 12] >> 4) * 4;
	size_t data = p->len - hlen - thlen;
	if (p->proto != IPPROTO_TCP || mtu <= hlen + thlen || data == 0) {
		h->st.dropped++;
		return;
	}
	size_t mss = mtu - hlen - thlen;
	h->st.gso_cut++;
	uint32_t seq = vy_get_u32(ip + hlen + 4);
	uint16_t id = vy_get_u16(ip + 4);
	for (size_t off = 0, i = 0; off < data; off += mss, i++) {
		size_t n = data - off < mss ? data - off : mss;
		size_t len = hlen + thlen + n;
		uint8_t *s = h->seg;
		memcpy(s, ip, hlen + thlen);
		memcpy(s + hlen + thlen, ip + hlen + thlen + off, n);
		if (p->family == 4) {
			vy_put_u16(s + 2, (uint16_t)len);
			vy_put_u16(s + 4, (uint16_t)(id + i));
			fill_ipv4_checksum(s);
		} else {
			vy_put_u16(s + 4, (uint16_t)(len - 40));
		}
		vy_put_u32(s + hlen + 4, seq + (uint32_t)off);
		if (off + n < data)
			s[hlen + 13] &= (uint8_t)~0x09; /* FIN, PSH */
		if (off)
			s[hlen + 13] &= (uint8_t)~0x80; /* CWR */
		struct vy_held_packet sp;
		if (vy_wire_check_ip_packet(s, len, &sp, NULL) < 0) {
			h->st.dropped++;
			continue;
		}
		fill_checksum(s, &sp);
		hold_packet(h, s, len);
	}
}

/* One frame that the host sent into the container on interface k. */
static void take_frame(struct vy_hold *h, int k, uint8_t *f, size_t n, uint32_t status)
{
	if (n < ETH_HLEN || memcmp(f, h->id.ifs[k].mac, 6) != 0)
		return;
	uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
	if (type != ETHERTYPE_IP && type != ETHERTYPE_IPV6)
		return;
	uint8_t *ip = f + ETH_HLEN;
	size_t len = n - ETH_HLEN;
	/* An Ethernet frame may be padded past the packet's end. */
	if (type == ETHERTYPE_IP && len >= 4 && vy_get_u16(ip + 2) < len && vy_get_u16(ip + 2) >= 20)
		len = vy_get_u16(ip + 2);
	else if (type == ETHERTYPE_IPV6 && len >= 40 && (size_t)vy_get_u16(ip + 4) + 40 < len)
		len = (size_t)vy_get_u16(ip + 4) + 40;
	vy_hold_take(h, k, ip, len, status & TP_STATUS_CSUMNOTREADY);
}

void vy_hold_take(struct vy_hold *h, int iface, uint8_t *ip, size_t len, bool csum_partial)
{
	struct vy_held_packet p;
	if (iface < 0 || iface >= h->id.nifs || vy_wire_check_ip_packet(ip, len, &p, NULL) < 0 ||
	    iface_of(&h->id, &p) != iface)
		return; /* not TCP or UDP to the container: not ours to hold */
	if (len > h->id.ifs[iface].mtu) {
		hold_segments(h, ip, &p, h->id.ifs[iface].mtu);
		return;
	}
	if (csum_partial)
		fill_checksum(ip, &p);
	hold_packet(h, ip, len);
}

/* Read every frame queued on interface k's socket. */
static void drain(struct vy_hold *h, int k)
{
	for (;;) {
		struct sockaddr_ll sll;
		union {
			struct cmsghdr c;
			char b[CMSG_SPACE(sizeof(struct tpacket_auxdata))];
		} ctl;
		struct iovec iov = { h->frame, FRAME_MAX };
		struct msghdr mh = { .msg_name = &sll, .msg_namelen = sizeof(sll), .msg_iov = &iov,
				     .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(h->fds[k], &mh, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		/* Only what the host sends into the container. */
		if (sll.sll_pkttype != PACKET_OUTGOING)
			continue;
		uint32_t status = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
				struct tpacket_auxdata aux;
				memcpy(&aux, CMSG_DATA(c), sizeof(aux));
				status = aux.tp_status;
			}
		if ((size_t)n > FRAME_MAX || (mh.msg_flags & MSG_TRUNC) ||
		    (status & TP_STATUS_VLAN_VALID)) {
			h->st.dropped++;
			continue;
		}
		take_frame(h, k, h->frame, (size_t)n, status);
	}
}

static void *hold_thread(void *arg)
{
	struct vy_hold *h = arg;
	struct pollfd p[HOLD_MAX_IFS + 1];
	int n = h->id.nifs;
	for (int k = 0; k < n; k++)
		p[k] = (struct pollfd){ .fd = h->fds[k], .events = POLLIN };
	p[n] = (struct pollfd){ .fd = h->stop[0], .events = POLLIN };
	for (;;) {
		if (poll(p, (nfds_t)n + 1, -1) < 0 && errno != EINTR)
			break;
		for (int k = 0; k < n; k++)
			if (p[k].revents)
				drain(h, k);
		if (p[n].revents)
			break;
	}
	for (int k = 0; k < n; k++)
		drain(h, k); /* what was queued when told to stop */
	return NULL;
}

/* A packet socket on ifindex that sees frames in both directions. */
static int capture_socket(int ifindex, const char *name, vy_error *err)
{
	/* Protocol 0 receives nothing until the bind names the interface. */
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (s < 0)
		return vy_error_sys(err, errno, "packet socket");
	int one = 1, rcv = HOLD_RCVBUF;
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
				   .sll_ifindex = ifindex };
	if (setsockopt(s, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0 ||
	    (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0 &&
	     setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)) < 0) ||
	    bind(s, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		int e = errno;
		close(s);
		return vy_error_sys(err, e, "packet socket on %s", name);
	}
	return s;
}

void vy_hold_free(struct vy_hold *h)
{
	if (!h)
		return;
	vy_hold_stop(h);
	for (int k = 0; k < HOLD_MAX_IFS; k++)
		if (h->fds[k] >= 0)
			close(h->fds[k]);
	for (int k = 0; k < 2; k++)
		if (h->stop[k] >= 0)
			close(h->stop[k]);
	free(h->frame);
	free(h->seg);
	free(h->buf);
	free(h);
}

int vy_hold_new(json_object *identity, struct vy_hold **out, vy_error *err)
{
	struct vy_hold *h = calloc(1, sizeof(*h));
	if (!h)
		return vy_error_set(err, ENOMEM, "out of memory");
	for (int k = 0; k < HOLD_MAX_IFS; k++)
		h->fds[k] = -1;
	h->stop[0] = h->stop[1] = -1;
	h->cap = 64 << 10;
	h->len = VY_HELD_HDR_LEN;
	h->buf = malloc(h->cap);
	h->frame = malloc(FRAME_MAX);
	h->seg = malloc(FRAME_MAX);
	if (!h->buf || !h->frame || !h->seg) {
		vy_hold_free(h);
		return vy_error_set(err, ENOMEM, "out of memory");
	}
	if (load_ifaces(identity, &h->id, err) < 0) {
		vy_hold_free(h);
		return -1;
	}
	*out = h;
	return 0;
}

int vy_hold_start(json_object *identity, struct vy_hold **out, vy_error *err)
{
	struct vy_hold *h;
	if (vy_hold_new(identity, &h, err) < 0)
		return -1;
	for (int k = 0; k < h->id.nifs; k++)
		if ((h->fds[k] = capture_socket(h->id.ifs[k].ifindex, h->id.ifs[k].host_if, err)) < 0) {
			vy_hold_free(h);
			return -1;
		}
	if (pipe2(h->stop, O_CLOEXEC) < 0) {
		vy_hold_free(h);
		return vy_error_sys(err, errno, "pipe");
	}
	int e = pthread_create(&h->thread, NULL, hold_thread, h);
	if (e) {
		vy_hold_free(h);
		return vy_error_sys(err, e, "cannot start a thread");
	}
	h->running = true;
	*out = h;
	return 0;
}

void vy_hold_stop(struct vy_hold *h)
{
	if (!h || !h->running)
		return;
	char c = 1;
	while (write(h->stop[1], &c, 1) < 0 && errno == EINTR)
		;
	pthread_join(h->thread, NULL);
	h->running = false;
}

struct vy_hold_stats vy_hold_stats(const struct vy_hold *h)
{
	return h ? h->st : (struct vy_hold_stats){ 0 };
}

void vy_hold_payload(struct vy_hold *h, const uint8_t **payload, size_t *len)
{
	vy_wire_encode_held_header(h->buf, h->st.packets, h->st.dropped);
	*payload = h->buf;
	*len = h->len;
}

static int host_mac(int sock, const char *ifname, unsigned char mac[6], vy_error *err)
{
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0)
		return vy_error_sys(err, errno, "interface %s", ifname);
	memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	return 0;
}

int vy_hold_replay(json_object *identity, const uint8_t *payload, size_t len,
		   uint32_t *replayed, vy_error *err)
{
	struct vy_held held;
	struct hold_ifaces id;
	*replayed = 0;
	if (vy_wire_parse_held(payload, len, &held, err) < 0)
		return vy_error_wrap(err, "held packets refused, none replayed");
	if (load_ifaces(identity, &id, err) < 0)
		return vy_error_wrap(err, "held packets not replayed");
	/* Every packet must be for this container before any is sent. */
	struct vy_held_packet p;
	size_t pos = 0;
	uint32_t n = 0;
	while (vy_wire_held_next(&held, &pos, &p)) {
		n++;
		if (iface_of(&id, &p) < 0) {
			char a[INET6_ADDRSTRLEN] = "?";
			inet_ntop(p.family == 4 ? AF_INET : AF_INET6, p.dst, a, sizeof(a));
			return vy_error_set(err, EINVAL, "held packet %u is for %s, not an address "
					    "of this container: none replayed", n, a);
		}
	}
	if (held.count == 0)
		return 0;
	cleanup_close int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (s < 0)
		return vy_error_sys(err, errno, "packet socket");
	unsigned char src[HOLD_MAX_IFS][6];
	for (int k = 0; k < id.nifs; k++)
		if (host_mac(s, id.ifs[k].host_if, src[k], err) < 0)
			return vy_error_wrap(err, "held packets not replayed");
	cleanup_free uint8_t *frame = malloc(FRAME_MAX);
	if (!frame)
		return vy_error_set(err, ENOMEM, "out of memory");
	int rc = 0;
	pos = 0;
	while (vy_wire_held_next(&held, &pos, &p)) {
		int k = iface_of(&id, &p);
		memcpy(frame, id.ifs[k].mac, 6);
		memcpy(frame + 6, src[k], 6);
		vy_put_u16(frame + 12, p.family == 4 ? ETHERTYPE_IP : ETHERTYPE_IPV6);
		memcpy(frame + ETH_HLEN, p.data, p.len);
		struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = id.ifs[k].ifindex,
					   .sll_halen = 6 };
		memcpy(sll.sll_addr, id.ifs[k].mac, 6);
		if (sendto(s, frame, ETH_HLEN + p.len, 0, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
			if (rc == 0)
				rc = vy_error_sys(err, errno, "replay a held packet of %u bytes on %s",
						  p.len, id.ifs[k].host_if);
			continue;
		}
		/* A veth hands frames to the container's backlog, which holds
		 * about a thousand: let it drain now and then. */
		if (++*replayed % 256 == 0)
			usleep(1000);
	}
	return rc;
}
