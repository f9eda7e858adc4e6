#!/bin/bash
# Stop-and-copy migration with crun: see stopcopy_common.sh.
RUNTIME=crun
. "$(dirname "$0")/stopcopy_common.sh"
