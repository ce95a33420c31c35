"""hpp-tracker's recovery CLI (`hpp-tracker`, docs/runbook.md): see a deployment and repair it.

Commands in their own modules: `sessions` (status, reconcile, republish), `redrive`, `replay`, `check`;
`target` finds a deployed or local stack and builds the tracker's adapters for it; `cli` is the command
line. It changes sessions only through the one write path and publishes only what the table holds.
"""
