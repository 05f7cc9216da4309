"""The ground floor: what every other part stands on; imports nothing else of ours."""
