"""Canary control: runtime weights, automated rollback, promotion."""
