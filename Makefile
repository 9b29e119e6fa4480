# Thin wrapper over ./dev for those who type `make`; ./dev works without make.
.PHONY: up test lint gen bench ci
up:    ; ./dev up
test:  ; ./dev test
lint:  ; ./dev lint
gen:   ; ./dev gen
bench: ; ./dev bench
ci:    ; ./dev ci
