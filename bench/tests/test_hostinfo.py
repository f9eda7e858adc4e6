"""bench/hostinfo.py: what the harness records about tools and its checkout."""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hostinfo  # noqa: E402


class TestHostinfo(unittest.TestCase):
    def test_ver(self):
        self.assertTrue(hostinfo.ver(sys.executable, "--version").startswith("Python 3"))
        self.assertIsNone(hostinfo.ver("/nonexistent/vybench-tool", "--version"))

    def test_git_describe_outside_a_checkout(self):
        with tempfile.TemporaryDirectory(prefix="vybtest") as t:
            self.assertIsNone(hostinfo.git_describe(t))

    def test_git_describe_in_a_checkout(self):
        with tempfile.TemporaryDirectory(prefix="vybtest") as t:
            env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                       GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
            for cmd in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
                subprocess.run(["git", "-C", t] + cmd, check=True, env=env, capture_output=True)
            head = subprocess.run(["git", "-C", t, "rev-parse", "--short", "HEAD"], check=True,
                                  capture_output=True, text=True).stdout.strip()
            self.assertEqual(hostinfo.git_describe(t), head)
            with open(os.path.join(t, "f"), "w") as f:
                f.write("x")
            subprocess.run(["git", "-C", t, "add", "f"], check=True, capture_output=True)
            self.assertEqual(hostinfo.git_describe(t), head + "-dirty")


if __name__ == "__main__":
    unittest.main()
