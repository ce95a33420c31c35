"""End-to-end tests on the local stack (marked e2e; they run in `make test` too)."""
