module example.invalid/qemumachine

go 1.19
