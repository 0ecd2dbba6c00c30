#!/usr/bin/env python3
"""QEMU's Python stack (qemu.qmp), driven the way QEMUMachine drives it, for qm-bench.

QEMUMachine (python/qemu/machine in QEMU's tree, not on PyPI) launches QEMU with
subprocess.Popen, its output in a log file in a private temp dir, the QMP monitor on one end
of a socketpair (`-chardev socket,fd=N`), connects qemu.qmp's QEMUMonitorProtocol (the
synchronous "legacy" API it uses) to the other end, and negotiates; `shutdown()` sends
`quit`, waits for the process and removes its files. This script does the same steps with the
same library, so its figures are what a QEMUMachine user pays.

Modes (all output is machine-readable, one line per answer):

  qmp_bench.py check
      prints `ok qemu.qmp <version>, Python <version>` (exit status 3 and a hint when qemu.qmp is missing)
  qmp_bench.py serve --qemu PATH [--accel tcg]
      reads requests on stdin, one per line, and answers on stdout:
        cycle           -> `cycle <ns> <cpu_ns> <child_cpu_ns>`: launch, negotiate,
                           query-status, quit, wait; with this process's user+sys CPU time
                           and that of the reaped QEMU
        launch          -> `ok`: launches a VM (as `cycle` does) for `rtt`
        rtt N           -> `rtt <cpu_ns> <ns> <ns> ...`: N query-status round trips on that
                           VM, each timed, and this process's user+sys CPU time over them
        stop            -> `ok`: shuts that VM down
  qmp_bench.py rss --qemu PATH [--accel tcg]
      in this fresh process: launch one VM, 100 query-status, 500 stop/cont whose 1000
      STOP/RESUME events are kept and then taken at once, query-version, shut down; prints
      `vmhwm_kib <n>` (peak RSS)
"""

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

try:
    import qemu.qmp
    from qemu.qmp.legacy import QEMUMonitorProtocol
except ImportError:
    print("error qemu.qmp is not installed: pip install qemu.qmp", flush=True)
    sys.exit(3)


class Vm:
    """The launch and shutdown steps of QEMUMachine, with a QMP socketpair."""

    def __init__(self, qemu, accel):
        self.temp_dir = tempfile.mkdtemp(prefix="qmp-bench-")
        self.log = open(os.path.join(self.temp_dir, "qemu.log"), "wb")
        ours, theirs = socket.socketpair()
        self.sock = ours
        args = [
            qemu,
            "-display", "none",
            "-chardev", f"socket,id=mon,fd={theirs.fileno()}",
            "-mon", "chardev=mon,mode=control",
            "-accel", accel,
            "-machine", "none",
            "-nodefaults",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self.qmp = QEMUMonitorProtocol(ours)
        self.qmp.connect()

    def cmd(self, name, **args):
        return self.qmp.cmd(name, **args)

    def shutdown(self):
        try:
            self.qmp.cmd("quit")
        except (EOFError, ConnectionError, qemu.qmp.error.QMPError):
            # QEMU may close the connection before its reply arrives.
            pass
        try:
            self.qmp.close()
        except EOFError:
            # As in QEMUMachine: after `quit`, the server closing the stream is expected.
            pass
        self.sock.close()
        status = self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.temp_dir)
        if status != 0:
            raise RuntimeError(f"QEMU exited with status {status}")


def cpu_ns(who=resource.RUSAGE_SELF):
    usage = resource.getrusage(who)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def cycle(qemu, accel):
    """One cycle: its wall time, our CPU time and the reaped QEMU's, in ns."""
    cpu, child_cpu = cpu_ns(), cpu_ns(resource.RUSAGE_CHILDREN)
    start = time.perf_counter_ns()
    vm = Vm(qemu, accel)
    status = vm.cmd("query-status")
    if status.get("status") != "running":
        raise RuntimeError(f"unexpected query-status reply {status!r}")
    vm.shutdown()
    wall = time.perf_counter_ns() - start
    return wall, cpu_ns() - cpu, cpu_ns(resource.RUSAGE_CHILDREN) - child_cpu


def serve(qemu, accel):
    vm = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "cycle":
            print("cycle", *cycle(qemu, accel), flush=True)
        elif words[0] == "launch":
            vm = Vm(qemu, accel)
            print("ok", flush=True)
        elif words[0] == "rtt":
            n = int(words[1])
            times = []
            cpu_before = cpu_ns()
            for _ in range(n):
                start = time.perf_counter_ns()
                vm.cmd("query-status")
                times.append(time.perf_counter_ns() - start)
            cpu = cpu_ns() - cpu_before
            print("rtt", cpu, " ".join(map(str, times)), flush=True)
        elif words[0] == "stop":
            vm.shutdown()
            vm = None
            print("ok", flush=True)
        else:
            print(f"error unknown request {words[0]!r}", flush=True)
    if vm is not None:
        vm.shutdown()


def vmhwm_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss(qemu, accel):
    vm = Vm(qemu, accel)
    for _ in range(100):
        vm.cmd("query-status")
    for _ in range(500):
        vm.cmd("stop")
        vm.cmd("cont")
    # QEMU sends STOP and RESUME before the replies to stop and cont: all 1000 are here.
    events = vm.qmp.get_events()
    if len(events) != 1000:
        raise RuntimeError(f"{len(events)} events kept, not 1000")
    vm.cmd("query-version")
    vm.shutdown()
    print(f"vmhwm_kib {vmhwm_kib()}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["check", "serve", "rss"])
    parser.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64")
    parser.add_argument("--accel", default="tcg")
    args = parser.parse_args()
    if args.mode == "check":
        try:
            from importlib.metadata import version
            qmp_version = version("qemu.qmp")
        except Exception:  # pylint: disable=broad-except
            qmp_version = "(unknown version)"
        print(f"ok qemu.qmp {qmp_version}, Python {sys.version.split()[0]}", flush=True)
    elif args.mode == "serve":
        serve(args.qemu, args.accel)
    else:
        rss(args.qemu, args.accel)


if __name__ == "__main__":
    main()
