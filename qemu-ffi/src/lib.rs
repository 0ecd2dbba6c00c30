//! The C ABI of `libqemumachine`, over `qemu-process`.
