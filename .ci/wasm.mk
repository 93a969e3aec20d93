# wasm32 build, browser and Node tests (issue 7).
.PHONY: test-wasm
test-wasm:
	@echo "test-wasm: nothing yet"
