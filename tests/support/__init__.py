"""Test support: local AWS stand-ins (DynamoDB Local, moto's server) and template helpers."""
