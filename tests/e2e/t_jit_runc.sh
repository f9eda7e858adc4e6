#!/bin/bash
# Just-in-time migration with runc: the same proofs as stop-and-copy (see
# stopcopy_common.sh), with the container resuming on voyager-fs.
RUNTIME=runc
MODE=jit
. "$(dirname "$0")/stopcopy_common.sh"
