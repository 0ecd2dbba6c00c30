//! Launch, control and shut down QEMU processes over QMP, in one thread.
