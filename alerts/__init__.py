"""Alert intake, classification, filters and alert routing."""
