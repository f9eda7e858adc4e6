#!/bin/bash
# Stop-and-copy migration with runc: see stopcopy_common.sh.
RUNTIME=runc
. "$(dirname "$0")/stopcopy_common.sh"
