"""What bench/run.sh and bench/jit.sh record about the tools and the
harness's checkout in their JSON.  Standard library only."""
import subprocess


def ver(*cmd):
    """The first line a tool prints for its version, or None."""
    try:
        o = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
        return (o.stdout or o.stderr).strip().splitlines()[0]
    except Exception:
        return None


def git_describe(path):
    """The harness's commit, or None outside a git checkout (a git archive copy)."""
    try:
        o = subprocess.run(["git", "-C", path, "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=20)
        return (o.stdout.strip() or None) if o.returncode == 0 else None
    except Exception:
        return None
