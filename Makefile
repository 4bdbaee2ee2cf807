.PHONY: build run test bench fmt lint

build:
	cargo build --release

run:
	cargo run --release -- serve

test:
	scripts/test

bench:
	cargo bench

fmt:
	cargo fmt

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
