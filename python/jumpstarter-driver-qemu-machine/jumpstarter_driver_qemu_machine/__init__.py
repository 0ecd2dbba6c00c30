"""A Jumpstarter QEMU driver on libqemumachine: ``type:
jumpstarter_driver_qemu_machine.driver.Qemu`` in an exporter configuration, in place of
jumpstarter-driver-qemu's ``Qemu``."""
