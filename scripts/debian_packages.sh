#!/usr/bin/env bash
# Debian packages the tests need, installed once with apt-get (as root); skipped when all are present:
#   slurm-wlm, munge             a real one-node SLURM for the job-script tests (scripts/slurm_cluster.sh)
#   the shellcheck linter        checks the generated job scripts
#   chromium, chromium-driver    headless Chromium for the report's HTML page (tests/browser.py)
set -euo pipefail
commands=(slurmctld munged shellcheck chromium chromedriver)
packages=(slurm-wlm munge shellcheck chromium chromium-driver)
missing=()
for i in "${!commands[@]}"; do
    command -v "${commands[$i]}" >/dev/null || missing+=("${packages[$i]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ]; then
    echo "debian_packages.sh: installing ${missing[*]} needs root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
