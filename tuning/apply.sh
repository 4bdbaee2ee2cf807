#!/usr/bin/env bash
# Applies the host settings tuning/README.md recommends. Opt-in: without --yes it only prints
# what it would do. Needs root for sysctls; settings last until reboot (persist them in
# /etc/sysctl.d yourself once measured). `sluice tune check` shows the result.
set -euo pipefail

apply=false
[ "${1:-}" = "--yes" ] && apply=true

settings=(
    "vm.swappiness=1"
    "vm.dirty_background_ratio=5"
    "vm.dirty_ratio=40"
    "net.core.somaxconn=4096"
    "net.ipv4.tcp_max_syn_backlog=4096"
    "net.core.rmem_max=16777216"
    "net.core.wmem_max=16777216"
)

run() {
    if $apply; then
        echo "+ $*"
        "$@"
    else
        echo "would run: $*"
    fi
}

for setting in "${settings[@]}"; do
    run sysctl -w "$setting"
done
if [ -w /sys/kernel/mm/transparent_hugepage/enabled ] || ! $apply; then
    run sh -c 'echo madvise > /sys/kernel/mm/transparent_hugepage/enabled'
fi
for governor in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
    [ -e "$governor" ] && run sh -c "echo performance > $governor"
done
$apply || echo "Nothing changed. Run with --yes (as root) to apply."
