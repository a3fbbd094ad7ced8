"""fileshare."""
