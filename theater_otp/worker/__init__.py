"""The worker process: one actor instance in a wasmtime host loop."""
