"""hpp-tracker's shared core: models, lifecycle rules, repository and Klarna client."""
