# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_qemu_machine_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_qemu_machine_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_qemu_machine_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_qemu_machine_using_subcommand
    set -l cmd (__fish_qemu_machine_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "run" -d 'Launch a VM with the terminal on its serial console'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "qmp" -d 'A QMP shell on a VM it launches, a started VM, or a running QEMU\'s socket'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "image" -d 'Disk images: info, create, resize, convert, flash, dump, check, snapshot'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "argv" -d 'Print the QEMU command line a spec produces, quoted for a POSIX shell'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "start" -d 'Start a VM that outlives this command (returns once QMP is up)'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "list" -d 'List the started VMs: name, QEMU\'s pid, state, uptime, forwards'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "console" -d 'Attach the terminal to a started VM\'s serial console (detaching leaves it running)'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "exec" -d 'Run a command in a started VM through its guest agent'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "stop" -d 'Stop a started VM: the ACPI power button, then quit, then kill, each bounded'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "kill" -d 'Kill a started VM\'s QEMU at once'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "__supervise" -d 'The supervisor of a started VM (run by `start`)'
complete -c qemu-machine -n "__fish_qemu_machine_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l arch -d 'Guest architecture: x86_64, aarch64 or riscv64' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l qemu -d 'The QEMU binary (default qemu-system-ARCH from PATH)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l machine -d 'Machine type (q35, virt, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l cpu -d 'CPU model (max, host, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l smp -d 'Number of CPUs' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -s m -l memory -d 'RAM size (512M, 2G)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l accel -d 'Accelerator: auto (KVM when usable, else TCG), kvm, tcg, or a list tried in order (kvm,tcg). Without it, the spec\'s list; with none there either, auto, unless a --qemu-arg chooses one (-accel, -machine accel=, -enable-kvm)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l name -d 'The VM\'s name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l kernel -d 'A kernel to boot directly' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l initrd -d 'An initrd for --kernel' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l append -d 'The kernel command line' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l bios -d 'A BIOS image' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l disk -d 'A disk: PATH, or key=value pairs like QEMU\'s (a comma in a value is written ,,): PATH[,format=qcow2][,size=8G][,flash=IMAGE][,if=virtio|scsi|nvme|ide][,readonly] [,snapshot][,id=NAME][,cache=MODE][,bootindex=N][,serial=S]. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l disk-size -d 'Grow the disk named root to this size at launch (never shrinks)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l forward -d 'Forward a host port to the guest (user networking): [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT. It listens on 127.0.0.1 unless HOSTADDR is given (0.0.0.0: every address, reachable from the network); host port 0 picks a free port. What listens where is printed. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l user -d 'cloud-init: create this user (NoCloud seed disk)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l password -d 'cloud-init: the user\'s password' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l ssh-key -d 'cloud-init: an SSH public key for the user (repeatable)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l hostname -d 'cloud-init: the guest\'s host name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l qemu-arg -d 'A raw QEMU argument appended to the command line (repeatable: --qemu-arg=-device --qemu-arg=virtio-rng-pci)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l for -d 'Stop the VM (gracefully) after this long: 500ms, 5s, 2m, 1h' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l powerdown -d 'When stopping the VM (quit, --for, a signal), first press the ACPI power button and give the guest this long to power off before QEMU is told to quit (default: 30s for a VM with a writable disk, 0 for one without: QEMU quits at once)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l shutdown-timeout -d 'How long QEMU may take to exit after quit before it is killed' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l events -d 'Which events to print: lifecycle (default), all or none' -r -f -a "lifecycle\t'Power, run-state and guest-crash events'
all\t'Every event'
none\t'None'"
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l console-log -d 'Also write the console output to this file (created with mode 0600)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l launch-timeout -d 'How long QEMU may take to start' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l uefi -d 'Boot UEFI firmware (found in the architecture\'s usual install locations)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l no-reboot -d 'Exit QEMU instead of rebooting the guest'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l default-partitions -d 'Add Jumpstarter\'s default drives: a disk `root` and UEFI firmware'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -l vnc -d 'A VNC server on a unix socket (its path is printed)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand run" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l arch -d 'Guest architecture: x86_64, aarch64 or riscv64' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l qemu -d 'The QEMU binary (default qemu-system-ARCH from PATH)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l machine -d 'Machine type (q35, virt, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l cpu -d 'CPU model (max, host, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l smp -d 'Number of CPUs' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s m -l memory -d 'RAM size (512M, 2G)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l accel -d 'Accelerator: auto (KVM when usable, else TCG), kvm, tcg, or a list tried in order (kvm,tcg). Without it, the spec\'s list; with none there either, auto, unless a --qemu-arg chooses one (-accel, -machine accel=, -enable-kvm)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l name -d 'The VM\'s name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l kernel -d 'A kernel to boot directly' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l initrd -d 'An initrd for --kernel' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l append -d 'The kernel command line' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l bios -d 'A BIOS image' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l disk -d 'A disk: PATH, or key=value pairs like QEMU\'s (a comma in a value is written ,,): PATH[,format=qcow2][,size=8G][,flash=IMAGE][,if=virtio|scsi|nvme|ide][,readonly] [,snapshot][,id=NAME][,cache=MODE][,bootindex=N][,serial=S]. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l disk-size -d 'Grow the disk named root to this size at launch (never shrinks)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l forward -d 'Forward a host port to the guest (user networking): [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT. It listens on 127.0.0.1 unless HOSTADDR is given (0.0.0.0: every address, reachable from the network); host port 0 picks a free port. What listens where is printed. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l user -d 'cloud-init: create this user (NoCloud seed disk)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l password -d 'cloud-init: the user\'s password' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l ssh-key -d 'cloud-init: an SSH public key for the user (repeatable)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l hostname -d 'cloud-init: the guest\'s host name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l qemu-arg -d 'A raw QEMU argument appended to the command line (repeatable: --qemu-arg=-device --qemu-arg=virtio-rng-pci)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l socket -d 'Connect to a running QEMU\'s QMP unix socket instead of launching a VM' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l tcp -d 'Connect to a running QEMU\'s QMP TCP server (HOST:PORT; HOST a name or an address) instead of launching a VM' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l wait -d 'With --socket or --tcp: keep trying to connect for this long while the socket does not exist yet or refuses (default: fail at once with the system\'s error)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s l -l logfile -d 'Append every request, reply and event to this file, one JSON value per line (created with mode 0600), like qmp-shell\'s -l' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l history -d 'The history file (default ~/.qemu-machine_history; kept at mode 0600, since commands may carry secrets); `none` keeps no history' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l timeout -d 'How long one command may take' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l uefi -d 'Boot UEFI firmware (found in the architecture\'s usual install locations)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l no-reboot -d 'Exit QEMU instead of rebooting the guest'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l default-partitions -d 'Add Jumpstarter\'s default drives: a disk `root` and UEFI firmware'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l vnc -d 'A VNC server on a unix socket (its path is printed)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l compact -d 'One line of JSON per reply and event (default: pretty-printed)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s p -l pretty -d 'Pretty-print the JSON (the default; accepted for qmp-shell\'s -p)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -l no-events -d 'Do not print events'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand qmp" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "info" -d 'Show an image\'s format, sizes, backing chain and snapshots'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "create" -d 'Create a new image (the file must not exist)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "resize" -d 'Change an image\'s virtual size: SIZE, +SIZE to grow or -SIZE to shrink by that much'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "convert" -d 'Convert an image into a new one of another format (an existing file is replaced only with --force)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "flash" -d 'Write an image (any format; gzip, xz, bzip2 or zstd compressed or not) into a disk image, replacing its contents'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "dump" -d 'Read a disk image into a new file (e.g. to save a VM\'s disk or UEFI variables; an existing file is replaced only with --force)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "check" -d 'Check an image\'s consistency (qcow2, qed, vdi, vhdx, vmdk). Exits like qemu-img check: 0 clean, 2 corruptions found, 3 only leaked clusters found, 1 the check itself failed, 63 the format has nothing to check'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "snapshot" -d 'Internal snapshots of a qcow2 image'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and not __fish_seen_subcommand_from info create resize convert flash dump check snapshot help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from info" -l json -d 'Print JSON instead of text'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from info" -s U -l force-share -d 'Read the image even while a running VM has it open (qemu-img -U; what is shown may be stale)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from info" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from info" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from info" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from info" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s f -l format -d 'The format (default: from the name\'s extension, .qcow2 .vmdk .vdi .vhdx .vhd .qed, else raw)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s b -l backing -d 'A backing file (the new image records only the changes)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s F -l backing-format -d 'The backing file\'s format (required with --backing: formats are never guessed)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s o -l option -d 'A format option, KEY=VALUE (cluster_size=65536, preallocation=metadata, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from resize" -l shrink -d 'Allow a smaller size (the data at the end is lost), as qemu-img resize --shrink'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from resize" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from resize" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from resize" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from resize" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s O -l format -d 'The new image\'s format (default: from its extension, else raw)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s f -l source-format -d 'The source\'s format (default: probed)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s U -l force-share -d 'Read the source even while a running VM has it open (qemu-img -U; the copy is inconsistent if the guest writes meanwhile)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -l force -d 'Replace the new image\'s file if it exists'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from convert" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from flash" -s f -l format -d 'The target\'s format (default: an existing target\'s own, else from its extension, else raw)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from flash" -l size -d 'Grow the target to at least this virtual size afterwards (qemu-img\'s syntax: 8G)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from flash" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from flash" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from flash" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from flash" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s O -l format -d 'The new file\'s format (default: from its extension, else raw)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s f -l source-format -d 'The source\'s format (default: probed)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s U -l force-share -d 'Read the source even while a running VM has it open (qemu-img -U; the copy is inconsistent if the guest writes meanwhile)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -l force -d 'Replace the new file if it exists'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from dump" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from check" -l repair -d 'Repair: leaks (safe) or all' -r -f -a "leaks\t'Leaked clusters only (safe)'
all\t'Everything (may lose data)'"
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from check" -s U -l force-share -d 'Check the image even while a running VM has it open (qemu-img -U; a running guest\'s writes can look like errors)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from snapshot" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from snapshot" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from snapshot" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from snapshot" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "info" -d 'Show an image\'s format, sizes, backing chain and snapshots'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a new image (the file must not exist)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "resize" -d 'Change an image\'s virtual size: SIZE, +SIZE to grow or -SIZE to shrink by that much'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "convert" -d 'Convert an image into a new one of another format (an existing file is replaced only with --force)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "flash" -d 'Write an image (any format; gzip, xz, bzip2 or zstd compressed or not) into a disk image, replacing its contents'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "dump" -d 'Read a disk image into a new file (e.g. to save a VM\'s disk or UEFI variables; an existing file is replaced only with --force)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "check" -d 'Check an image\'s consistency (qcow2, qed, vdi, vhdx, vmdk). Exits like qemu-img check: 0 clean, 2 corruptions found, 3 only leaked clusters found, 1 the check itself failed, 63 the format has nothing to check'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "snapshot" -d 'Internal snapshots of a qcow2 image'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand image; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l arch -d 'Guest architecture: x86_64, aarch64 or riscv64' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l qemu -d 'The QEMU binary (default qemu-system-ARCH from PATH)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l machine -d 'Machine type (q35, virt, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l cpu -d 'CPU model (max, host, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l smp -d 'Number of CPUs' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -s m -l memory -d 'RAM size (512M, 2G)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l accel -d 'Accelerator: auto (KVM when usable, else TCG), kvm, tcg, or a list tried in order (kvm,tcg). Without it, the spec\'s list; with none there either, auto, unless a --qemu-arg chooses one (-accel, -machine accel=, -enable-kvm)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l name -d 'The VM\'s name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l kernel -d 'A kernel to boot directly' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l initrd -d 'An initrd for --kernel' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l append -d 'The kernel command line' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l bios -d 'A BIOS image' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l disk -d 'A disk: PATH, or key=value pairs like QEMU\'s (a comma in a value is written ,,): PATH[,format=qcow2][,size=8G][,flash=IMAGE][,if=virtio|scsi|nvme|ide][,readonly] [,snapshot][,id=NAME][,cache=MODE][,bootindex=N][,serial=S]. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l disk-size -d 'Grow the disk named root to this size at launch (never shrinks)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l forward -d 'Forward a host port to the guest (user networking): [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT. It listens on 127.0.0.1 unless HOSTADDR is given (0.0.0.0: every address, reachable from the network); host port 0 picks a free port. What listens where is printed. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l user -d 'cloud-init: create this user (NoCloud seed disk)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l password -d 'cloud-init: the user\'s password' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l ssh-key -d 'cloud-init: an SSH public key for the user (repeatable)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l hostname -d 'cloud-init: the guest\'s host name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l qemu-arg -d 'A raw QEMU argument appended to the command line (repeatable: --qemu-arg=-device --qemu-arg=virtio-rng-pci)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l uefi -d 'Boot UEFI firmware (found in the architecture\'s usual install locations)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l no-reboot -d 'Exit QEMU instead of rebooting the guest'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l default-partitions -d 'Add Jumpstarter\'s default drives: a disk `root` and UEFI firmware'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l vnc -d 'A VNC server on a unix socket (its path is printed)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -l json -d 'Print the spec (the file or default VM with the flags applied) as JSON instead'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand argv" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l arch -d 'Guest architecture: x86_64, aarch64 or riscv64' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l qemu -d 'The QEMU binary (default qemu-system-ARCH from PATH)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l machine -d 'Machine type (q35, virt, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l cpu -d 'CPU model (max, host, ...)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l smp -d 'Number of CPUs' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -s m -l memory -d 'RAM size (512M, 2G)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l accel -d 'Accelerator: auto (KVM when usable, else TCG), kvm, tcg, or a list tried in order (kvm,tcg). Without it, the spec\'s list; with none there either, auto, unless a --qemu-arg chooses one (-accel, -machine accel=, -enable-kvm)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l name -d 'The VM\'s name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l kernel -d 'A kernel to boot directly' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l initrd -d 'An initrd for --kernel' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l append -d 'The kernel command line' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l bios -d 'A BIOS image' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l disk -d 'A disk: PATH, or key=value pairs like QEMU\'s (a comma in a value is written ,,): PATH[,format=qcow2][,size=8G][,flash=IMAGE][,if=virtio|scsi|nvme|ide][,readonly] [,snapshot][,id=NAME][,cache=MODE][,bootindex=N][,serial=S]. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l disk-size -d 'Grow the disk named root to this size at launch (never shrinks)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l forward -d 'Forward a host port to the guest (user networking): [NAME=][tcp:|udp:][HOSTADDR:]HOSTPORT:GUESTPORT. It listens on 127.0.0.1 unless HOSTADDR is given (0.0.0.0: every address, reachable from the network); host port 0 picks a free port. What listens where is printed. Repeatable' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l user -d 'cloud-init: create this user (NoCloud seed disk)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l password -d 'cloud-init: the user\'s password' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l ssh-key -d 'cloud-init: an SSH public key for the user (repeatable)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l hostname -d 'cloud-init: the guest\'s host name' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l qemu-arg -d 'A raw QEMU argument appended to the command line (repeatable: --qemu-arg=-device --qemu-arg=virtio-rng-pci)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l console-log -d 'Also write the console output to this file (created with mode 0600)' -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l launch-timeout -d 'How long QEMU may take to start' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l uefi -d 'Boot UEFI firmware (found in the architecture\'s usual install locations)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l no-reboot -d 'Exit QEMU instead of rebooting the guest'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l default-partitions -d 'Add Jumpstarter\'s default drives: a disk `root` and UEFI firmware'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l vnc -d 'A VNC server on a unix socket (its path is printed)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -l no-guest-agent -d 'Leave out the guest agent\'s channel (a virtio-serial port `org.qemu.guest_agent.0`, which `exec` talks to)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand start" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand list" -l json -d 'Print JSON (an array of objects) instead of a table; each also says whether the guest agent runs (`guest_agent`: "running", "not running", or "none" without a channel)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand list" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand list" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand list" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand list" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand console" -l for -d 'Detach after this long (for scripts; default: when asked)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand console" -l force -d 'Take the console over from another client that has it'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand console" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand console" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand console" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand console" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand exec" -l timeout -d 'How long the command may run' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand exec" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand exec" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand exec" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand exec" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand stop" -l timeout -d 'How long the guest has to power off after the ACPI power button before QEMU is told to quit (0: quit at once)' -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand stop" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand stop" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand stop" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand stop" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand kill" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand kill" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand kill" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand kill" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -l name -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -l dir -r -F
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -l lock-fd -r
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -s v -l verbose -d 'More log output: -v warnings and progress, -vv debug, -vvv trace (errors are always shown; RUST_LOG overrides). In `qmp`, -v echoes each request (as qmp-shell -v) and the log starts at -vv'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -s q -l quiet -d 'Only errors: no banner, status or event lines'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -s h -l help -d 'Print help'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand __supervise" -s V -l version -d 'Print version'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "run" -d 'Launch a VM with the terminal on its serial console'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "qmp" -d 'A QMP shell on a VM it launches, a started VM, or a running QEMU\'s socket'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "image" -d 'Disk images: info, create, resize, convert, flash, dump, check, snapshot'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "argv" -d 'Print the QEMU command line a spec produces, quoted for a POSIX shell'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "start" -d 'Start a VM that outlives this command (returns once QMP is up)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "list" -d 'List the started VMs: name, QEMU\'s pid, state, uptime, forwards'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "console" -d 'Attach the terminal to a started VM\'s serial console (detaching leaves it running)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "exec" -d 'Run a command in a started VM through its guest agent'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "stop" -d 'Stop a started VM: the ACPI power button, then quit, then kill, each bounded'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "kill" -d 'Kill a started VM\'s QEMU at once'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "__supervise" -d 'The supervisor of a started VM (run by `start`)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and not __fish_seen_subcommand_from run qmp image argv start list console exec stop kill __supervise help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "info" -d 'Show an image\'s format, sizes, backing chain and snapshots'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "create" -d 'Create a new image (the file must not exist)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "resize" -d 'Change an image\'s virtual size: SIZE, +SIZE to grow or -SIZE to shrink by that much'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "convert" -d 'Convert an image into a new one of another format (an existing file is replaced only with --force)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "flash" -d 'Write an image (any format; gzip, xz, bzip2 or zstd compressed or not) into a disk image, replacing its contents'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "dump" -d 'Read a disk image into a new file (e.g. to save a VM\'s disk or UEFI variables; an existing file is replaced only with --force)'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "check" -d 'Check an image\'s consistency (qcow2, qed, vdi, vhdx, vmdk). Exits like qemu-img check: 0 clean, 2 corruptions found, 3 only leaked clusters found, 1 the check itself failed, 63 the format has nothing to check'
complete -c qemu-machine -n "__fish_qemu_machine_using_subcommand help; and __fish_seen_subcommand_from image" -f -a "snapshot" -d 'Internal snapshots of a qcow2 image'
