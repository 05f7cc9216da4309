"""Publishing: pure parts."""
