# shellcheck shell=bash
# nginx-lib.sh - moved to scripts/lib/nginx.sh; kept so that scripts which
# still source this path keep working.
# shellcheck source=scripts/lib/nginx.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/nginx.sh"
