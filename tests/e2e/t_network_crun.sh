#!/bin/bash
# Network identity with crun: see network_common.sh.
RUNTIME=crun
. "$(dirname "$0")/network_common.sh"
