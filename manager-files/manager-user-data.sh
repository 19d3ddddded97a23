#!/bin/bash
# Manager user data (placeholder until the manager deploy lands): mount the
# data volume at /var/lib/manager. devstack attaches the volume as /dev/sdf
# once the instance runs, so wait for it (Amazon Linux links the NVMe device
# to /dev/sdf). A blank volume gets a filesystem; one with data is kept.
set -euo pipefail

readonly DEVICE=/dev/sdf
readonly MOUNT=/var/lib/manager

for _ in $(seq 1 120); do
  [ -b "$DEVICE" ] && break
  sleep 5
done
if [ ! -b "$DEVICE" ]; then
  echo "the data volume never appeared at $DEVICE" >&2
  exit 1
fi
blkid "$DEVICE" >/dev/null || mkfs -t xfs "$DEVICE"
mkdir -p "$MOUNT"
uuid=$(blkid -s UUID -o value "$DEVICE")
grep -q "UUID=$uuid" /etc/fstab || echo "UUID=$uuid $MOUNT xfs defaults,nofail 0 2" >>/etc/fstab
mount -a
