//! Shared helpers for the integration tests: finding QEMU and building the guest fixture.
