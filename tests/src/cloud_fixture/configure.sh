#!/bin/sh
# Runs inside the debootstrapped tree of the cloud fixture (chroot, as root) and turns it
# into a cloud image: NoCloud cloud-init, DHCP on the first NIC, no identity of its own (the
# machine id, host keys and host name come at first boot), and nothing that only takes space.
# The layout it relies on (root file system label, kernel symlinks) is described in
# tests/src/cloud_fixture.rs; keep the two in step.
set -eu
export LC_ALL=C DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin
root_label=$1

# Locales: C.UTF-8 is built in; en_US.UTF-8 generated for programs that ask for it.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)$/\1/' /etc/locale.gen
locale-gen >/dev/null
echo 'LANG=C.UTF-8' >/etc/default/locale

# No identity: systemd makes a machine id at first boot (an empty file, not a missing one,
# so that it can be written on a read-only /etc too), cloud-init sets the host name, and ssh
# host keys are made by cloud-init or, without a seed, by ssh-keygen -A before sshd starts.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
echo localhost >/etc/hostname
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' >/etc/hosts
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' >/etc/systemd/system/ssh.service.d/host-keys.conf
# debootstrap copies the build machine's resolver configuration; DHCP writes the guest's.
rm -f /etc/resolv.conf

printf 'LABEL=%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' "$root_label" >/etc/fstab

# cloud-init: the NoCloud seed only (a disk labelled cidata); without one cloud-init stays
# off. Without network-config in the seed it brings up the first NIC by DHCP (ifupdown).
# /etc/hosts gets the host name too (sudo looks it up), and the host keys are the types
# OpenSSH 9.2 uses by default.
cat >/etc/cloud/cloud.cfg.d/90_qemu_machine.cfg <<'CFG'
datasource_list: [ NoCloud, None ]
manage_etc_hosts: true
ssh_genkeytypes: [ rsa, ecdsa, ed25519 ]
CFG

cat >/etc/apt/sources.list <<'APT'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
APT

# Nothing periodic that reaches for the network or scrubs disks in a short-lived test VM.
systemctl disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer fstrim.timer e2scrub_reap.service >/dev/null 2>&1

# Size: no documentation, manual pages or translations, now or in later installs.
cat >/etc/dpkg/dpkg.cfg.d/01-qemu-machine-nodoc <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/*
find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
find /var/log -type f -delete
rm -rf /tmp/* /var/tmp/* /root/.bash_history
