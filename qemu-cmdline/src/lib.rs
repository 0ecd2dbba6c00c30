//! Typed construction of QEMU and qemu-img command lines with correct escaping.
