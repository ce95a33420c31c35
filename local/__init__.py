"""The local stack (``python -m local.stack``) and the Klarna HPP simulator (``-m local.klarna_simulator``).

Everything here runs on one machine with real engines (DynamoDB Local, moto's server) and no Docker; the
tests share its runners (``local.dynamodb_local``, ``local.template``) rather than keeping copies.
"""
