module qemu-machine.invalid/qemumachine

go 1.19
