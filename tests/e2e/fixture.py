#!/usr/bin/env python3
"""fixture.py - a file tree that exercises every kind of metadata, and a
canonical listing of a tree, so that a test can say "identical".

  fixture.py make DIR [--big MiB]   populate DIR (must exist)
  fixture.py list DIR               print one line per entry, sorted

The listing holds, per entry: path, type, mode (with suid/sgid/sticky),
uid, gid, size, mtime in ns, every xattr, symlink target, SHA-256 of
regular files, and which entries are hard links of each other.
"""
import hashlib
import os
import stat
import sys


def make(root, big_mib=0):
    j = lambda *p: os.path.join(root, *p)
    os.makedirs(j("dir", "sub", "deeper"), exist_ok=True)
    with open(j("plain.txt"), "w") as f:
        f.write("hello from the source host\n" * 100)
    with open(j("dir", "sub", "deeper", "nested.bin"), "wb") as f:
        f.write(os.urandom(300000))
    open(j("empty"), "w").close()
    with open(j("sparse.img"), "wb") as f:
        f.seek(64 << 20)
        f.write(b"tail")
        f.seek(1 << 20)
        f.write(b"middle")
    with open(j("links-a"), "w") as f:
        f.write("three names, one inode\n")
    os.link(j("links-a"), j("dir", "links-b"))
    os.link(j("links-a"), j("dir", "sub", "links-c"))
    os.symlink("plain.txt", j("rel-link"))
    os.symlink("/etc/does-not-exist", j("dangling-abs-link"))
    os.symlink("../../plain.txt", j("dir", "sub", "up-link"))
    os.mkfifo(j("fifo"))
    os.mknod(j("null-dev"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(j("setuid-prog"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(j("setuid-prog"), 0o4755)
    os.chmod(j("dir"), 0o2775)
    os.makedirs(j("sticky"), exist_ok=True)
    os.chmod(j("sticky"), 0o1777)
    with open(j("owned"), "w") as f:
        f.write("odd owner\n")
    os.chown(j("owned"), 1234, 5678)
    os.lchown(j("rel-link"), 4321, 8765)
    os.setxattr(j("plain.txt"), "user.voyager.test", b"xattr value \x00\x01 binary")
    os.setxattr(j("dir"), "user.dir.attr", b"on a directory")
    os.setxattr(j("owned"), "trusted.voyager", b"trusted xattr")
    with open(j("readonly"), "w") as f:
        f.write("r\n")
    os.chmod(j("readonly"), 0o400)
    if big_mib:
        with open(j("big.bin"), "wb") as f:
            chunk = os.urandom(1 << 20)
            for i in range(big_mib):
                f.write(chunk[i % 7:] + chunk[: i % 7])
    old = 1_500_000_000_123_456_789
    os.utime(j("plain.txt"), ns=(old, old))
    os.utime(j("rel-link"), ns=(old, old + 1000), follow_symlinks=False)
    os.utime(j("dir", "sub"), ns=(old, old + 5))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def listing(root):
    out, inodes = [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [""] + sorted(dirnames + filenames) if dirpath == root else sorted(dirnames + filenames):
            full = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            extra = ""
            if stat.S_ISLNK(st.st_mode):
                extra = "-> " + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                extra = sha256(full)
                if st.st_nlink > 1:
                    first = inodes.setdefault((st.st_dev, st.st_ino), rel)
                    extra += " link-group=" + first
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = "dev=%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                names = sorted(os.listxattr(full, follow_symlinks=False))
                xattrs = ";".join("%s=%s" % (n, os.getxattr(full, n, follow_symlinks=False).hex()) for n in names)
            except OSError:
                xattrs = "?"
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) or rel != "." else 0
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out.append("%s type=%o mode=%o uid=%d gid=%d size=%d mtime=%d xattrs=[%s] %s" % (
                rel, kind >> 12, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, mtime, xattrs, extra))
    return sorted(set(out))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        big = int(sys.argv[4]) if len(sys.argv) >= 5 and sys.argv[3] == "--big" else 0
        make(sys.argv[2], big)
    elif len(sys.argv) == 3 and sys.argv[1] == "list":
        print("\n".join(listing(sys.argv[2])))
    else:
        sys.exit(__doc__)
