"""nginx config rendered from the same cutover YAML (`cutover render nginx`)."""
