#!/bin/bash
# Network identity with runc: see network_common.sh.
RUNTIME=runc
. "$(dirname "$0")/network_common.sh"
