#!/usr/bin/env python3
"""Run bench/tests and end with one line "N passed, N failed"."""
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py", top_level_dir=here)
result = unittest.TextTestRunner(verbosity=2).run(suite)
bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
print("%d passed, %d failed" % (result.testsRun - bad - len(result.skipped), bad))
sys.exit(1 if bad else 0)
