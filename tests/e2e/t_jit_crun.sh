#!/bin/bash
# Just-in-time migration with crun: see stopcopy_common.sh.
RUNTIME=crun
MODE=jit
. "$(dirname "$0")/stopcopy_common.sh"
