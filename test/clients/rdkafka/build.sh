#!/usr/bin/env bash
# Builds rdk against the system librdkafka (Debian: librdkafka-dev).
set -euo pipefail
cd "$(dirname "$0")"
cc -O2 -Wall -Wextra -Werror=implicit-function-declaration -Werror=int-conversion -o rdk rdk.c -lrdkafka
