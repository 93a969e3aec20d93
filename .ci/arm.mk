# ARM targets under qemu, C API (issue 8).
.PHONY: test-arm
test-arm:
	@echo "test-arm: nothing yet"
