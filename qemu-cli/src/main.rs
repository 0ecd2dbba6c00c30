//! The `qemu-machine` command.

fn main() {
    eprintln!("qemu-machine: no subcommands are implemented in this build yet");
    std::process::exit(2);
}
