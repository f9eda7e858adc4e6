#!/usr/bin/env python3
"""redis_client.py - a client that keeps ONE TCP connection to redis and
talks on it continuously, checking every reply, so that a test can say
what a user of the migrated container saw.

  redis_client.py HOST PORT SECONDS OUT.json [--interval S] [--prefix P]
                  [--ready FILE] [--value-bytes N]

Every interval it sends INCR PREFIX:counter and SET PREFIX:k<n> <n> on the
same connection and checks both replies.  At the end, on the same
connection, it reads back every key whose SET was acknowledged.  With
--value-bytes N each SET stores N bytes (the number, then padding), so
that every request spans several TCP segments, and goes before the INCR.  It writes:
  connected, errors (first error text), replies, max_gap_ms (longest time
  between two replies), last_counter (last acknowledged INCR), acked_sets,
  missing (acknowledged keys not found afterwards), reset (connection
  reset or closed by the peer).
The loop is bounded by SECONDS; each reply wait by 30 s.
"""
import json
import socket
import sys
import time


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionResetError("connection closed by the peer")
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def reply(self):
        l = self.line()
        if l[:1] in (b"+", b":"):
            return l[1:].decode()
        if l[:1] == b"-":
            raise RuntimeError("redis error: " + l.decode())
        if l[:1] == b"$":
            n = int(l[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                d = self.s.recv(65536)
                if not d:
                    raise ConnectionResetError("connection closed by the peer")
                self.buf += d
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v.decode()
        raise RuntimeError("unexpected reply %r" % l)

    def call(self, *args):
        self.s.sendall(resp(*args))
        return self.reply()


def main():
    host, port, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    opts = dict(zip(sys.argv[5::2], sys.argv[6::2]))
    interval = float(opts.get("--interval", "0.005"))
    prefix = opts.get("--prefix", "vy")
    vbytes = int(opts.get("--value-bytes", "0"))

    def value(i):
        v = str(i)
        return v + "-" + "x" * (vbytes - len(v) - 1) if vbytes > len(v) + 1 else v

    r = dict(connected=False, errors=None, replies=0, max_gap_ms=0.0, last_counter=None,
             acked_sets=0, missing=0, reset=False)
    try:
        c = Conn(host, port)
        r["connected"] = True
    except OSError as e:
        r["errors"] = "connect: %s" % e
        json.dump(r, open(out, "w"))
        return 1
    if "--ready" in opts:
        open(opts["--ready"], "w").close()
    last = time.monotonic()
    end = last + seconds
    n = 0
    try:
        while time.monotonic() < end:
            # With big values the SET goes first: the request that meets
            # a pause is then most likely the big one.
            if vbytes:
                ok = c.call("SET", "%s:k%d" % (prefix, n), value(n))
            v = c.call("INCR", prefix + ":counter")
            if not vbytes:
                ok = c.call("SET", "%s:k%d" % (prefix, n), value(n))
            now = time.monotonic()
            if ok != "OK":
                raise RuntimeError("SET answered %r" % ok)
            r["max_gap_ms"] = max(r["max_gap_ms"], (now - last) * 1000)
            last = now
            r["replies"] += 2
            r["last_counter"] = int(v)
            n += 1
            r["acked_sets"] = n
            time.sleep(interval)
        for i in range(n):
            if c.call("GET", "%s:k%d" % (prefix, i)) != value(i):
                r["missing"] += 1
    except (ConnectionResetError, BrokenPipeError) as e:
        r["reset"] = True
        r["errors"] = str(e)
    except Exception as e:
        r["errors"] = "%s: %s" % (type(e).__name__, e)
    r["max_gap_ms"] = round(r["max_gap_ms"], 1)
    json.dump(r, open(out, "w"))
    return 0 if r["errors"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
