"""Everything that runs the tracker on one machine, by role:

- `local.stack`: the local stack (`python -m local.stack`, `make run`), the whole application from
  template.yaml; `local.demo`: the demo (`python -m local.demo`, `make demo`) that drives it;
- `local.emulators`: what stands in for AWS (DynamoDB Local and moto as processes, the API gateway, the
  Lambda runtime, the stream pump and its mapping, the scheduler, the fault proxy);
- `local.template`: the one reader of template.yaml (SAM's Globals merged in, intrinsics resolved);
- `local.klarna_simulator`: the Klarna HPP simulator, the one fake Klarna;
- `local.common`: what they share (HTTP server, start/stop and child processes, signals, logs, options).

Real engines (DynamoDB Local, moto's server) and no Docker; the tests use these runners rather than
keeping copies.
"""
