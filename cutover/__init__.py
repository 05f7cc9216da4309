"""cutover: a migration gateway (the package root and composition root)."""
