//! The QEMU Machine Protocol (QMP) as a sans-IO codec and session state machine.
