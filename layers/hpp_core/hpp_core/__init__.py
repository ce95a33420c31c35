"""hpp-tracker's shared core: models, lifecycle rules, ports, repository, Klarna client, publisher."""
